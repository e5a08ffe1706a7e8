package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
)

const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ test@example"

func mustParse(t *testing.T, src string, opts Options) *Config {
	t.Helper()
	cfg, err := Parse("infra.yaml", []byte(src), opts)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return cfg
}

func TestReferenceExample(t *testing.T) {
	data, err := os.ReadFile("../../examples/reference/infra.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := mustParse(t, string(data), Options{})
	if len(cfg.VMs) != 5 {
		t.Fatalf("got %d VMs, want 5", len(cfg.VMs))
	}
	for i, vm := range cfg.VMs {
		n := i + 1
		want := Net{
			Subnet:  netip.MustParsePrefix("10." + itoa(n) + ".0.0/24"),
			Gateway: netip.MustParseAddr("10." + itoa(n) + ".0.1"),
			Address: netip.MustParseAddr("10." + itoa(n) + ".0.2"),
			Bridge:  "br-vm" + itoa(n),
			TAP:     "vm-vm" + itoa(n),
			MAC:     "02:00:00:00:00:0" + itoa(n),
			Domain:  DefaultDomain,
			// The ULA scheme: fd6d:6963 and the IPv4 network 10.n.0.0.
			Subnet6:  netip.MustParsePrefix("fd6d:6963:a0" + itoa(n) + "::/64"),
			Gateway6: netip.MustParseAddr("fd6d:6963:a0" + itoa(n) + "::1"),
			Address6: netip.MustParseAddr("fd6d:6963:a0" + itoa(n) + "::2"),
		}
		if vm.Net != want {
			t.Errorf("%s: net = %+v, want %+v", vm.Name, vm.Net, want)
		}
		if vm.VCPU != 2 || vm.Memory != GiB || vm.Hypervisor != "qemu" || !vm.Kernel.IsHost() {
			t.Errorf("%s: resources = %d vCPU %s %s %s", vm.Name, vm.VCPU, vm.Memory, vm.Hypervisor, vm.Kernel)
		}
		if len(vm.Volumes) != 1 || vm.Volumes[0] != (Volume{Name: "data", MountPoint: "/mnt/storage", Size: 64 * GiB}) {
			t.Errorf("%s: volumes = %+v", vm.Name, vm.Volumes)
		}
	}
	vm1 := cfg.VM("vm1")
	if vm1.Image != "docker.io/wholelottahoopla/sandbox:latest" || len(vm1.Ports) != 1 || vm1.Ports[0] != (Port{8080, 8080, "tcp"}) {
		t.Errorf("vm1 = %+v", vm1)
	}
	if cfg.VM("vm2").Image != "base" {
		t.Errorf("vm2 image = %q, want the default base", cfg.VM("vm2").Image)
	}
}

func itoa(n int) string { return string(rune('0' + n)) }

func TestDefaultsMerge(t *testing.T) {
	cfg := mustParse(t, `
defaults:
  vcpu: 2
  memory: 1G
  sshKeys: ["`+testKey+`"]
  volumes:
    - { name: data, mountPoint: /mnt/storage, size: 64G }
vms:
  a: { index: 1 }
  b: { index: 2, memory: 4G, volumes: [] }
  c:
    index: 3
    volumes:
      - { name: db, mountPoint: /srv/db, size: 10G }
  d: { subnet: 192.168.50.0/24, sshKeys: [] }
`, Options{})
	a, b, c, d := cfg.VM("a"), cfg.VM("b"), cfg.VM("c"), cfg.VM("d")
	if a.VCPU != 2 || a.Memory != GiB || len(a.Volumes) != 1 || len(a.SSHKeys) != 1 {
		t.Errorf("a should take every default: %+v", a)
	}
	if b.Memory != 4*GiB || b.VCPU != 2 {
		t.Errorf("b's own memory should win and vcpu come from defaults: %+v", b)
	}
	if len(b.Volumes) != 0 {
		t.Errorf("b wrote volumes: [] so it has none, got %+v", b.Volumes)
	}
	if len(c.Volumes) != 1 || c.Volumes[0].Name != "db" {
		t.Errorf("c's list should replace the default's: %+v", c.Volumes)
	}
	if len(d.SSHKeys) != 0 {
		t.Errorf("d wrote sshKeys: [] so it has none: %+v", d.SSHKeys)
	}
	if d.Net.Gateway.String() != "192.168.50.1" || d.Net.Address.String() != "192.168.50.2" || d.Net.MAC != "02:00:c0:a8:32:02" {
		t.Errorf("d net = %+v", d.Net)
	}
	// Built-in defaults where nothing is written.
	e := mustParse(t, "vms: { e: { index: 9 } }", Options{}).VM("e")
	if e.VCPU != DefaultVCPU || e.Memory != DefaultMemory || e.Image != DefaultImage || e.Hypervisor != DefaultHypervisor {
		t.Errorf("built-in defaults not applied: %+v", e)
	}
}

func TestWorkloadMerge(t *testing.T) {
	cfg := mustParse(t, `
defaults:
  env: { LANG: C.UTF-8, MODE: prod }
  user: nobody
vms:
  a: { index: 1, command: [/bin/app, --serve], env: { MODE: dev, PORT: "8080" } }
  b: { index: 2, command: ["sleep 1"], user: "0", workdir: /srv }
`, Options{})
	a, b := cfg.VM("a"), cfg.VM("b")
	if a.Env["LANG"] != "C.UTF-8" || a.Env["MODE"] != "dev" || a.Env["PORT"] != "8080" || len(a.Env) != 3 {
		t.Errorf("env should merge key by key with the VM's keys winning: %v", a.Env)
	}
	if a.User != "nobody" || len(a.Command) != 2 {
		t.Errorf("a = %+v", a)
	}
	if b.User != "0" || b.Workdir != "/srv" || b.Env["MODE"] != "prod" {
		t.Errorf("b = %+v", b)
	}
}

func TestMACsUnique(t *testing.T) {
	var b strings.Builder
	b.WriteString("vms:\n")
	for i := 1; i <= 255; i++ {
		b.WriteString("  i" + strings.TrimLeft(strings.Repeat("0", 3)+itoa3(i), "") + ": { index: " + itoa3(i) + " }\n")
		b.WriteString("  s" + itoa3(i) + ": { subnet: 172.16." + itoa3(i) + ".0/24 }\n")
	}
	cfg := mustParse(t, b.String(), Options{})
	seen := map[string]string{}
	for _, vm := range cfg.VMs {
		if other, dup := seen[vm.Net.MAC]; dup {
			t.Fatalf("MAC %s of %s also given to %s", vm.Net.MAC, vm.Name, other)
		}
		seen[vm.Net.MAC] = vm.Name
	}
}

func itoa3(i int) string {
	s := ""
	for ; i > 0; i /= 10 {
		s = string(rune('0'+i%10)) + s
	}
	return s
}

func TestSpecHashChangesWithSpec(t *testing.T) {
	a := mustParse(t, "vms: { a: { index: 1, memory: 1G } }", Options{}).VM("a")
	b := mustParse(t, "vms: { a: { index: 1, memory: 2G } }", Options{}).VM("a")
	a2 := mustParse(t, "defaults: { memory: 1G }\nvms: { a: { index: 1 } }", Options{}).VM("a")
	if a.SpecHash() == b.SpecHash() {
		t.Error("different memory, same hash")
	}
	if a.SpecHash() != a2.SpecHash() {
		t.Error("same resolved spec written two ways should hash the same")
	}
}

func TestSupervisionNotInHash(t *testing.T) {
	a := mustParse(t, "vms: { a: { index: 1 } }", Options{}).VM("a")
	b := mustParse(t, "vms: { a: { index: 1, restart: no, stopTimeout: 5s, autostart: false } }", Options{}).VM("a")
	if a.SpecHash() != b.SpecHash() {
		t.Error("changing supervision settings must not change the spec hash")
	}
	if !a.Supervision.Autostart || a.Supervision.Restart != RestartAlways || a.Supervision.StopTimeout != DefaultStopTimeout {
		t.Errorf("defaults: %+v", a.Supervision)
	}
	if b.Supervision.Autostart || b.Supervision.Restart != RestartNo || b.Supervision.StopTimeout.String() != "5s" {
		t.Errorf("b: %+v", b.Supervision)
	}
}

func TestAnchorsAndAliases(t *testing.T) {
	cfg := mustParse(t, `
vms:
  a:
    index: 1
    volumes: &vols
      - { name: data, mountPoint: /mnt/storage, size: 8G }
  b: { index: 2, volumes: *vols }
`, Options{})
	if got := cfg.VM("b").Volumes; len(got) != 1 || got[0].Size != 8*GiB {
		t.Errorf("b's aliased volumes = %+v", got)
	}
}

// TestBadConfigs is the catalogue of rejected files: each must fail with a
// problem at the given path whose message contains the given text.
// testSecret is an age file (encrypted to a throwaway key) as a YAML
// flow scalar.
const testSecret = `"-----BEGIN AGE ENCRYPTED FILE-----\nYWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IFgyNTUxOSBkajZhNTFMckR3ZEFSYXZH\nRGtlT3ZrZU5PZWZJbEdONXFFK05hdWZQL2s4ClFUd0VoSnhEcC9FZnZTQXd6bW9r\nNnBrWURNTTI3L2EvSDV4OGkzR3o2SWcKLS0tIE4weEh2RXpHSHN0M0Nib0ZEQTVN\nZVc5OWFTQ2hJeGZlKytCVGlQem5TcjQKT1v/beqsR4K83/J+NYbT9ymisRbM21hX\nA2lstdyBSKim\n-----END AGE ENCRYPTED FILE-----\n"`

func TestSecretsMerge(t *testing.T) {
	cfg := mustParse(t, "defaults: { secrets: [{path: /run/secrets/k, age: "+testSecret+"}] }\nvms: { a: { index: 1 }, b: { index: 2, secrets: [] } }", Options{})
	a, b := cfg.VM("a"), cfg.VM("b")
	if len(a.Secrets) != 1 || a.Secrets[0].Path != "/run/secrets/k" || len(b.Secrets) != 0 {
		t.Fatalf("secrets: a %+v, b %+v", a.Secrets, b.Secrets)
	}
	if m, err := ParseFileMode(a.Secrets[0].Mode); err != nil || m != 0o400 {
		t.Errorf("default mode %o, %v", m, err)
	}
}

// badConfig is a file validation must refuse, with the problem it must
// report: at path, its message containing msg.
type badConfig struct {
	name, src, path, msg string
	opts                 Options
}

// badConfigs is the catalogue of files validation refuses.
var badConfigs = []badConfig{
	{"empty file", "", "", "the file is empty", Options{}},
	{"only comments", "# nothing\n", "", "the file is empty", Options{}},
	{"not yaml", "vms: [unclosed", "", "not valid YAML", Options{}},
	{"tab indentation", "vms:\n\ta: {}\n", "", "not valid YAML", Options{}},
	{"two documents", "vms: {}\n---\nvms: {}\n", "", "more than one YAML document", Options{}},
	{"top level list", "- a\n- b\n", "", "expected a mapping of keys", Options{}},
	{"missing vms", "host: {}\n", "vms", "required", Options{}},
	{"unknown top key", "vms: {}\nvmz: {}\n", "vmz", `unknown key "vmz"`, Options{}},
	{"unknown vm key with hint", "vms: { a: { index: 1, memroy: 1G } }", "vms.a.memroy", `did you mean "memory"`, Options{}},
	{"unknown nested key", "vms: { a: { index: 1, volumes: [{name: d, mountPoint: /d, size: 1G, fstype: xfs}] } }", "vms.a.volumes[0].fstype", "unknown key", Options{}},
	{"duplicate vm", "vms:\n  a: { index: 1 }\n  a: { index: 2 }\n", "vms.a", "duplicate key", Options{}},
	{"duplicate field", "vms:\n  a:\n    index: 1\n    index: 2\n", "vms.a.index", "duplicate key", Options{}},
	{"wrong type vcpu", "vms: { a: { index: 1, vcpu: two } }", "vms.a.vcpu", "expected a whole number", Options{}},
	{"egress word", "vms: { a: { index: 1, egress: off } }", "vms.a.egress", `"none" or a mapping`, Options{}},
	{"egress bad cidr", "vms: { a: { index: 1, egress: { allow: [{ to: 10.0.0.0/33 }] } } }", "vms.a.egress.allow[0].to", `"10.0.0.0/33" is not a network`, Options{}},
	{"egress zone", "vms: {}\nnetwork: { egress: { deny: [{ to: \"fe80::1%eth0\" }] } }", "network.egress.deny[0].to", "is not a network", Options{}},
	{"fleet internet", "vms: {}\nnetwork: { egress: { internet: false } }", "network.egress.internet", "internet is per VM", Options{}},
	{"egress bad port", "vms: { a: { index: 1, egress: { deny: [{ to: 10.0.0.1, ports: [\"5432/sctp\"] }] } } }", "vms.a.egress.deny[0].ports[0]", "protocol must be tcp or udp", Options{}},
	{"wrong type vms", "vms: [a, b]", "vms", "expected a mapping of names", Options{}},
	{"wrong type volumes", "vms: { a: { index: 1, volumes: data } }", "vms.a.volumes", "expected a list", Options{}},
	{"wrong type image", "vms: { a: { index: 1, image: 5 } }", "vms.a.image", "expected a string", Options{}},
	{"merge key", "base: &b { index: 1 }\nvms: { a: { <<: *b } }", "base", "unknown key", Options{}},
	{"name too long", "vms: { averyveryverylongname: { index: 1 } }", "vms.averyveryverylongname", "over the kernel's 15-byte interface name limit", Options{}},
	{"name bad chars", "vms: { \"vm/1\": { index: 1 } }", "vms.vm/1", "may use only lowercase letters", Options{}},
	{"name uppercase", "vms: { VM1: { index: 1 } }", "vms.VM1", "may use only lowercase letters", Options{}},
	{"name with space", "vms: { \"a b\": { index: 1 } }", "vms.a b", "may use only", Options{}},
	{"no index nor subnet", "vms: { a: { vcpu: 1 } }", "vms.a", "needs index", Options{}},
	{"index zero", "vms: { a: { index: 0 } }", "vms.a.index", "outside 1-255", Options{}},
	{"index too big", "vms: { a: { index: 256 } }", "vms.a.index", "outside 1-255", Options{}},
	{"duplicate index", "vms: { a: { index: 1 }, b: { index: 1 } }", "vms.b.index", "also used by a", Options{}},
	{"bad cidr", "vms: { a: { subnet: 10.1.0.0/33 } }", "vms.a.subnet", "is not a CIDR subnet", Options{}},
	{"not cidr", "vms: { a: { subnet: banana } }", "vms.a.subnet", "is not a CIDR subnet", Options{}},
	{"prefix too small", "vms: { a: { subnet: 10.1.0.0/31 } }", "vms.a.subnet", "too small", Options{}},
	{"host bits", "vms: { a: { subnet: 10.1.0.5/24 } }", "vms.a.subnet", "did you mean 10.1.0.0/24", Options{}},
	{"ipv6 subnet", "vms: { a: { subnet: \"fd00::/64\" } }", "vms.a.subnet", "not IPv4", Options{}},
	{"loopback subnet", "vms: { a: { subnet: 127.1.0.0/24 } }", "vms.a.subnet", "not usable", Options{}},
	{"overlapping subnets", "vms: { a: { index: 1 }, b: { subnet: 10.1.0.128/25 } }", "vms.b.subnet", "overlaps 10.1.0.0/24 of a", Options{}},
	{"duplicate subnet", "vms: { a: { subnet: 192.168.1.0/24 }, b: { subnet: 192.168.1.0/24 } }", "vms.b.subnet", "overlaps", Options{}},
	{"overlaps host address", "vms: { a: { index: 1 } }", "vms.a.index", "on the host's interface eth0",
		Options{HostAddrs: []HostAddr{{"eth0", netip.MustParsePrefix("10.1.2.3/16")}}}},
	{"vcpu zero", "vms: { a: { index: 1, vcpu: 0 } }", "vms.a.vcpu", "at least 1", Options{}},
	{"vcpu above host", "vms: { a: { index: 1, vcpu: 64 } }", "vms.a.vcpu", "more than the host's 2 CPUs", Options{HostCPUs: 2}},
	{"memory too small", "vms: { a: { index: 1, memory: 64M } }", "vms.a.memory", "below the minimum of 128M", Options{}},
	{"memory bare bytes", "vms: { a: { index: 1, memory: 1024 } }", "vms.a.memory", "below the minimum", Options{}},
	{"memory unparsable", "vms: { a: { index: 1, memory: lots } }", "vms.a.memory", "cannot read", Options{}},
	{"memory negative", "vms: { a: { index: 1, memory: -1G } }", "vms.a.memory", "negative", Options{}},
	{"defaults memory too small", "defaults: { memory: 1M }\nvms: { a: { index: 1 } }", "defaults.memory", "below the minimum", Options{}},
	{"defaults index", "defaults: { index: 1 }\nvms: {}", "defaults.index", "per VM", Options{}},
	{"unknown hypervisor", "vms: { a: { index: 1, hypervisor: vmware } }", "vms.a.hypervisor", "unknown hypervisor", Options{}},
	{"volume too small", "vms: { a: { index: 1, volumes: [{ name: d, mountPoint: /d, size: 512K }] } }", "vms.a.volumes[0].size", "below the minimum of 1M", Options{}},
	{"volume duplicate name", "vms: { a: { index: 1, volumes: [{ name: d, mountPoint: /d, size: 1G }, { name: d, mountPoint: /e, size: 1G }] } }", "vms.a.volumes[1].name", "used twice", Options{}},
	{"volume duplicate mount", "vms: { a: { index: 1, volumes: [{ name: d, mountPoint: /d, size: 1G }, { name: e, mountPoint: /d, size: 1G }] } }", "vms.a.volumes[1].mountPoint", "used twice", Options{}},
	{"volume relative mount", "vms: { a: { index: 1, volumes: [{ name: d, mountPoint: mnt/d, size: 1G }] } }", "vms.a.volumes[0].mountPoint", "absolute", Options{}},
	{"volume unclean mount", "vms: { a: { index: 1, volumes: [{ name: d, mountPoint: /mnt/../d, size: 1G }] } }", "vms.a.volumes[0].mountPoint", "not clean", Options{}},
	{"volume at root", "vms: { a: { index: 1, volumes: [{ name: d, mountPoint: /, size: 1G }] } }", "vms.a.volumes[0].mountPoint", "reserved", Options{}},
	{"volume name traversal", "vms: { a: { index: 1, volumes: [{ name: ../x, mountPoint: /d, size: 1G }] } }", "vms.a.volumes[0].name", "may use only", Options{}},
	{"volume name too long", "vms: { a: { index: 1, volumes: [{ name: abcdefghijklmnopqrstuv, mountPoint: /d, size: 1G }] } }", "vms.a.volumes[0].name", "virtio serial", Options{}},
	{"volume no name", "vms: { a: { index: 1, volumes: [{ mountPoint: /d, size: 1G }] } }", "vms.a.volumes[0].name", "needs a name", Options{}},
	{"bad ssh key", "vms: { a: { index: 1, sshKeys: [\"ssh-rsa nope\"] } }", "vms.a.sshKeys[0]", "not an SSH public key", Options{}},
	{"VM registry password not age", "vms: { a: { index: 1, registries: { r.test: { username: u, password: hunter2 } } } }", "vms.a.registries[\"r.test\"].password", "must be age-encrypted", Options{}},
	{"VM registry not a host", "vms: { a: { index: 1, registries: { \"r.test/app\": { username: u, password: hunter2 } } } }", "vms.a.registries[\"r.test/app\"]", "is not a registry host", Options{}},
	{"backup without a repository", "vms: { a: { index: 1, snapshots: { backup: { password: " + testSecret + " } } } }", "vms.a.snapshots.backup.repository", "needs a restic repository", Options{}},
	{"backup password not age", "vms: { a: { index: 1, snapshots: { backup: { repository: /srv/restic, password: hunter2 } } } }", "vms.a.snapshots.backup.password", "must be age-encrypted", Options{}},
	{"backup env not age", "vms: { a: { index: 1, snapshots: { backup: { repository: /srv/restic, password: " + testSecret + ", env: { AWS_SECRET_ACCESS_KEY: plain } } } } }", "vms.a.snapshots.backup.env.AWS_SECRET_ACCESS_KEY", "must be age-encrypted", Options{}},
	{"peer without a port", "peers: { b: { address: 10.0.0.2, key: sha256:0000000000000000000000000000000000000000000000000000000000000000 } }\nvms: {}", "peers.b.address", "is not host:port", Options{}},
	{"peer key not a key", "peers: { b: { address: \"10.0.0.2:7444\", key: abc } }\nvms: {}", "peers.b.key", "is not a peer key", Options{}},
	{"secret not age", "vms: { a: { index: 1, secrets: [{path: /run/s, age: hunter2}] } }", "vms.a.secrets[0].age", "not an ASCII-armored age file", Options{}},
	{"secret relative path", "vms: { a: { index: 1, secrets: [{path: run/s, age: " + testSecret + "}] } }", "vms.a.secrets[0].path", "absolute, clean", Options{}},
	{"secret no path", "vms: { a: { index: 1, secrets: [{age: " + testSecret + "}] } }", "vms.a.secrets[0].path", "needs the path", Options{}},
	{"secret twice", "vms: { a: { index: 1, secrets: [{path: /s, age: " + testSecret + "}, {path: /s, age: " + testSecret + "}] } }", "vms.a.secrets[1].path", "used twice", Options{}},
	{"secret mode", "vms: { a: { index: 1, secrets: [{path: /s, mode: \"0999\", age: " + testSecret + "}] } }", "vms.a.secrets[0].mode", "not octal", Options{}},
	{"secret owner", "vms: { a: { index: 1, secrets: [{path: /s, owner: \"a;rm\", age: " + testSecret + "}] } }", "vms.a.secrets[0].owner", "not a user name", Options{}},
	{"secret on a volume", "defaults: { volumes: [{name: data, mountPoint: /mnt/storage, size: 1G}] }\nvms: { a: { index: 1, secrets: [{path: /mnt/storage/key, age: " + testSecret + "}] } }", "vms.a.secrets[0].path", "on the data volume data", Options{}},
	{"kernel relative", "vms: { a: { index: 1, kernel: { path: vmlinuz } } }", "vms.a.kernel.path", "absolute", Options{}},
	{"kernel bad word", "vms: { a: { index: 1, kernel: guest } }", "vms.a.kernel", `"host" or a mapping`, Options{}},
	{"kernel map without path", "vms: { a: { index: 1, kernel: { modules: /lib/modules/x } } }", "vms.a.kernel.path", "needs path", Options{}},
	{"image traversal", "vms: { a: { index: 1, image: ../../etc } }", "vms.a.image", "may not contain '..'", Options{}},
	{"image bad ref", "vms: { a: { index: 1, image: \"docker.io/UPPER/x:latest\" } }", "vms.a.image", "not a valid OCI reference", Options{}},
	{"image bad name", "vms: { a: { index: 1, image: \"a b\" } }", "vms.a.image", "not a store image name", Options{}},
	{"port out of range", "vms: { a: { index: 1, ports: [70000] } }", "vms.a.ports[0]", "outside 1-65535", Options{}},
	{"port bad proto", "vms: { a: { index: 1, ports: [\"53/icmp\"] } }", "vms.a.ports[0]", "tcp or udp", Options{}},
	{"port reversed range", "vms: { a: { index: 1, ports: [\"90-80\"] } }", "vms.a.ports[0]", "ends before it starts", Options{}},
	{"port overlap", "vms: { a: { index: 1, ports: [8080, \"8000-9000/tcp\"] } }", "vms.a.ports[1]", "overlaps", Options{}},
	{"allow unknown vm", "vms: { a: { index: 1 } }\nnetwork: { allow: [{ from: a, to: ghost, ports: [80] }] }", "network.allow[0].to", `unknown VM "ghost"`, Options{}},
	{"allow same vm", "vms: { a: { index: 1 } }\nnetwork: { allow: [{ from: a, to: a, ports: [80] }] }", "network.allow[0]", "same VM", Options{}},
	{"allow no ports", "vms: { a: { index: 1 }, b: { index: 2 } }\nnetwork: { allow: [{ from: a, to: b }] }", "network.allow[0].ports", "at least one port", Options{}},
	{"allow bad proto", "vms: { a: { index: 1 }, b: { index: 2 } }\nnetwork: { allow: [{ from: a, to: b, ports: [\"5432/sctp\"] }] }", "network.allow[0].ports[0]", "tcp or udp", Options{}},
	{"forward unknown vm", "vms: { a: { index: 1 } }\nnetwork: { forwards: [{ hostPort: 80, to: \"b:80\" }] }", "network.forwards[0].to", `unknown VM "b"`, Options{}},
	{"forward bad target", "vms: { a: { index: 1 } }\nnetwork: { forwards: [{ hostPort: 80, to: \"a\" }] }", "network.forwards[0].to", `"vm:port"`, Options{}},
	{"forward bad port", "vms: { a: { index: 1 } }\nnetwork: { forwards: [{ hostPort: 0, to: \"a:80\" }] }", "network.forwards[0].hostPort", "outside 1-65535", Options{}},
	{"forward duplicate host port", "vms: { a: { index: 1 } }\nnetwork: { forwards: [{ hostPort: 80, to: \"a:80\" }, { hostPort: 80, to: \"a:81\" }] }", "network.forwards[1].hostPort", "already forwarded", Options{}},
	{"forward host ssh port", "host: { allowedTCPPorts: [22] }\nvms: { a: { index: 1 } }\nnetwork: { forwards: [{ hostPort: 22, to: \"a:22\" }] }", "network.forwards[0].hostPort", "allowedTCPPorts", Options{}},
	{"forward bad proto", "vms: { a: { index: 1 } }\nnetwork: { forwards: [{ hostPort: 80, to: \"a:80\", proto: sctp }] }", "network.forwards[0].proto", "tcp or udp", Options{}},
	{"bad uplink name", "host: { externalInterface: \"this-name-is-too-long0\" }\nvms: {}", "host.externalInterface", "over the kernel's limit", Options{}},
	{"host port range", "host: { allowedTCPPorts: [0] }\nvms: {}", "host.allowedTCPPorts[0]", "outside 1-65535", Options{}},
	{"host port twice", "host: { allowedTCPPorts: [22, 22] }\nvms: {}", "host.allowedTCPPorts[1]", "listed twice", Options{}},
	{"host dns name", "host: { dns: [1.1.1.1, dns.example] }\nvms: {}", "host.dns[1]", `"dns.example" is not a resolver's address`, Options{}},
	{"host dns port", "host: { dns: [\"192.0.2.1:0\"] }\nvms: {}", "host.dns[0]", "is not a resolver's address", Options{}},
	{"service range malformed", "host: { serviceCIDRs: [10.96.0.0] }\nvms: {}", "host.serviceCIDRs[0]", `"10.96.0.0" is not a CIDR range`, Options{}},
	{"service range bits", "host: { serviceCIDRs: [10.96.0.1/12] }\nvms: {}", "host.serviceCIDRs[0]", "did you mean 10.96.0.0/12", Options{}},
	{"service range everything", "host: { serviceCIDRs: [10.96.0.0/16, \"::/0\"] }\nvms: {}", "host.serviceCIDRs[1]", "every address", Options{}},
	{"service range over a vm", "host: { serviceCIDRs: [10.0.0.0/8] }\nvms: { a: { index: 1 } }", "vms.a.index", "overlaps the Service range 10.0.0.0/8 (host.serviceCIDRs[0])", Options{}},
	{"tailscale socket relative", "host: { tailscale: { socket: run/ts.sock } }\nvms: {}", "host.tailscale.socket", `"run/ts.sock" is not an absolute path`, Options{}},
	{"tailscale interface", "host: { tailscale: { interface: \"a b\" } }\nvms: {}", "host.tailscale.interface", "", Options{}},
	{"tailscale port", "host: { tailscale: { port: 70000 } }\nvms: {}", "host.tailscale.port", "outside 1-65535", Options{}},
	{"ipv6 prefix malformed", "host: { ipv6Prefix: 10.0.0.0/8 }\nvms: {}", "host.ipv6Prefix", `"10.0.0.0/8" is not an IPv6 prefix`, Options{}},
	{"ipv6 prefix size", "host: { ipv6Prefix: \"2001:db8::/60\" }\nvms: {}", "host.ipv6Prefix", "must be /32 to /56", Options{}},
	{"ipv6 prefix bits", "host: { ipv6Prefix: \"2001:db8::1/48\" }\nvms: {}", "host.ipv6Prefix", "did you mean 2001:db8::/48", Options{}},
	{"subnet6 in defaults", "defaults: { subnet6: \"fd00:1::/64\" }\nvms: {}", "defaults.subnet6", "subnet6 is per VM", Options{}},
	{"subnet6 size", "vms: { a: { index: 1, subnet6: \"fd00:1::/56\" } }", "vms.a.subnet6", "a VM's IPv6 network is a /64", Options{}},
	{"subnet6 link-local", "vms: { a: { index: 1, subnet6: \"fe80::/64\" } }", "vms.a.subnet6", "not usable for a VM network", Options{}},
	{"subnet6 twice", "vms: { a: { index: 1, subnet6: \"fd00:1::/64\" }, b: { index: 2, subnet6: \"fd00:1::/64\" } }", "vms.b.subnet6", "subnet6 fd00:1::/64 is also a's", Options{}},
	{"routed needs index", "host: { ipv6Prefix: \"2001:db8:42::/48\" }\nvms: { a: { subnet: 192.168.9.0/24 } }", "vms.a", "needs index or subnet6", Options{}},
	{"subnet6 on the host", "vms: { a: { index: 1 } }", "vms.a.index", "subnet6 fd6d:6963:a01::/64 overlaps fd6d:6963:a01::5/48 on the host's interface eth0",
		Options{HostAddrs: []HostAddr{{Interface: "eth0", Prefix: netip.MustParsePrefix("fd6d:6963:a01::5/48")}}}},
	{"domain label", "network: { domain: my_vms.lan }\nvms: {}", "network.domain", `label "my_vms" must be 1-63 letters`, Options{}},
	{"domain hyphen", "network: { domain: lan- }\nvms: {}", "network.domain", "not starting or ending with a hyphen", Options{}},
	{"workdir relative", "vms: { a: { index: 1, command: [x], workdir: srv } }", "vms.a.workdir", "absolute", Options{}},
	{"bad user", "vms: { a: { index: 1, command: [x], user: \"Bob Smith\" } }", "vms.a.user", "neither a user name nor a uid", Options{}},
	{"empty command", "vms: { a: { index: 1, command: [\"\"] } }", "vms.a.command[0]", "the command is empty", Options{}},
	{"env bad name", "vms: { a: { index: 1, env: { \"A=B\": x } } }", "vms.a.env.A=B", "not an environment variable name", Options{}},
	{"bad restart", "vms: { a: { index: 1, restart: sometimes } }", "vms.a.restart", "always, on-failure or no", Options{}},
	{"bad stop timeout", "vms: { a: { index: 1, stopTimeout: soon } }", "vms.a.stopTimeout", "not a duration", Options{}},
	{"cpu weight negative", "vms: { a: { index: 1, limits: { cpuWeight: -1 } } }", "vms.a.limits.cpuWeight", "outside 1-10000", Options{}},
	{"cpu weight too big", "vms: { a: { index: 1, limits: { cpuWeight: 20000 } } }", "vms.a.limits.cpuWeight", "outside 1-10000", Options{}},
	{"cpus not a number", "vms: { a: { index: 1, limits: { cpus: many } } }", "vms.a.limits.cpus", "a number", Options{}},
	{"cpus over host", "vms: { a: { index: 1, limits: { cpus: 3.5 } } }", "vms.a.limits.cpus", "more than the host's 2 CPUs", Options{HostCPUs: 2}},
	{"memory limit below guest", "vms: { a: { index: 1, memory: 1G, limits: { memory: 1G } } }", "vms.a.limits.memory", "leaves no room", Options{}},
	{"memory limit below default guest", "defaults: { limits: { memory: 256M } }\nvms: { a: { index: 1 } }", "vms.a.limits.memory", "at least memory (512M)", Options{}},
	{"unknown limit", "vms: { a: { index: 1, limits: { io: 5 } } }", "vms.a.limits.io", "unknown", Options{}},
	{"health check empty", "vms: { a: { index: 1, healthCheck: {} } }", "vms.a.healthCheck", "needs tcp: PORT or http: PORT", Options{}},
	{"health check both", "vms: { a: { index: 1, healthCheck: { tcp: 1, http: 2 } } }", "vms.a.healthCheck", "not both", Options{}},
	{"health check port", "vms: { a: { index: 1, healthCheck: { tcp: 70000 } } }", "vms.a.healthCheck.tcp", "outside 1-65535", Options{}},
	{"health check path", "vms: { a: { index: 1, healthCheck: { http: 80, path: healthz } } }", "vms.a.healthCheck.path", "must start with /", Options{}},
	{"host name", "vms: { a: { index: 1, host: \"bad host\" } }", "vms.a.host", "not a host name", Options{}},
	{"hosts mixed", "vms: { a: { index: 1, host: h1 }, b: { index: 2 } }", "vms.b.host", "every VM names its host", Options{}},
	{"image policy without keys", "vms: { a: { index: 1, imagePolicy: { allowLocal: true } } }", "vms.a.imagePolicy.keys", "at least one key", Options{}},
	{"identities without a trusted root", "vms: { a: { index: 1, imagePolicy: { identities: [{ issuer: i, subject: s }] } } }", "vms.a.imagePolicy.trustedRoot", "identities need a trusted root", Options{}},
	{"relative trusted root", "vms: { a: { index: 1, imagePolicy: { identities: [{ issuer: i, subject: s }], trustedRoot: root.json } } }", "vms.a.imagePolicy.trustedRoot", "must be an absolute path", Options{}},
	{"identity without an issuer", "vms: { a: { index: 1, imagePolicy: { identities: [{ subject: s }], trustedRoot: /r.json } } }", "vms.a.imagePolicy.identities[0].issuer", "needs issuer or issuerRegExp", Options{}},
	{"identity with subject twice", "vms: { a: { index: 1, imagePolicy: { identities: [{ issuer: i, subject: s, subjectRegExp: s }], trustedRoot: /r.json } } }", "vms.a.imagePolicy.identities[0].subject", "not both", Options{}},
	{"identity with a bad expression", "vms: { a: { index: 1, imagePolicy: { identities: [{ issuer: i, subjectRegExp: '(' }], trustedRoot: /r.json } } }", "vms.a.imagePolicy.identities[0].subjectRegExp", "not a regular expression", Options{}},
	{"trusted root without identities", "vms: { a: { index: 1, imagePolicy: { keys: [/k.pub], trustedRoot: /r.json } } }", "vms.a.imagePolicy.identities", "only used to check identities", Options{}},
	{"image policy relative key", "defaults: { imagePolicy: { keys: [cosign.pub] } }\nvms: { a: { index: 1 } }", "defaults.imagePolicy.keys[0]", "absolute path", Options{}},
	{"image policy bad PEM", "vms: { a: { index: 1, imagePolicy: { keys: [\"-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n\"] } } }", "vms.a.imagePolicy.keys[0]", "cannot be read", Options{}},
	{"bad pull policy", "vms: { a: { index: 1, pullPolicy: sometimes } }", "vms.a.pullPolicy", "missing, always or never", Options{}},
	{"stop timeout too short", "vms: { a: { index: 1, stopTimeout: 10ms } }", "vms.a.stopTimeout", "outside 1s-1h", Options{}},
	{"billion laughs", laughs(), "", "expands to more than", Options{}},
	{"allow across hosts", "vms: { a: { index: 1, host: h1 }, b: { index: 2, host: h2 } }\nnetwork: { allow: [{ from: a, to: b, ports: [\"80/tcp\"] }] }", "network.allow[0]", "a runs on host h1 and b on host h2", Options{}},
	{"memoryMin above memory", "vms: { a: { index: 1, memory: 512M, memoryMin: 1G } }", "vms.a.memoryMin", "memoryMin 1G is more than memory 512M", Options{}},
	{"memoryMin above the defaults' memory", "defaults: { memory: 256M, memoryMin: 384M }\nvms: { a: { index: 1 } }", "vms.a.memoryMin", "is more than memory 256M", Options{}},
	{"memoryMin too small", "vms: { a: { index: 1, memoryMin: 16M } }", "vms.a.memoryMin", "below the minimum", Options{}},
	{"reclaim without below", "host: { reclaim: { above: 4G } }\nvms: { a: { index: 1 } }", "host.reclaim.below", "below must be a size", Options{}},
	{"reclaim that would flap", "host: { reclaim: { below: 4G, above: 2G } }\nvms: { a: { index: 1 } }", "host.reclaim.above", "must be more than below", Options{}},
	{"ksm on a kernel without it", "host: { ksm: { enabled: true } }\nvms: { a: { index: 1 } }", "host.ksm.enabled", "this host's kernel has no KSM: /sys/kernel/mm/ksm is missing", Options{NoKSM: "/sys/kernel/mm/ksm is missing"}},
	{"ksm sleep too long", "host: { ksm: { enabled: true, sleep: 2m } }\nvms: { a: { index: 1 } }", "host.ksm.sleep", "outside 0-1m", Options{}},
}

func TestBadConfigs(t *testing.T) {
	cases := badConfigs
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse("infra.yaml", []byte(c.src), c.opts)
			if err == nil {
				t.Fatalf("accepted: %+v", cfg)
			}
			if cfg != nil {
				t.Error("a rejected file must not yield a config")
			}
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("error %v is not Problems", err)
			}
			for _, p := range ps {
				if p.Path == c.path && strings.Contains(p.Message, c.msg) {
					if p.File != "infra.yaml" {
						t.Errorf("problem does not name the file: %+v", p)
					}
					if !strings.HasPrefix(p.String(), "infra.yaml:") {
						t.Errorf("problem line %q does not start with the file", p)
					}
					return
				}
			}
			t.Errorf("no problem at %q containing %q; got:\n%v", c.path, c.msg, err)
		})
	}
	if len(cases) < 30 {
		t.Fatalf("only %d bad configs; the catalogue must hold at least 30", len(cases))
	}
}

// laughs aliases one VM with a long aliased key list from many VMs, so the
// short document expands to over a million nodes.
func laughs() string {
	var b strings.Builder
	b.WriteString("junk: &s \"x\"\nvms:\n  v0: &v { index: 1, sshKeys: [")
	for j := range 2000 {
		if j > 0 {
			b.WriteString(",")
		}
		b.WriteString("*s")
	}
	b.WriteString("] }\n")
	for i := 1; i < 600; i++ {
		b.WriteString("  v" + itoa3(i) + ": *v\n")
	}
	return b.String()
}

func TestProblemsHaveLines(t *testing.T) {
	src := "vms:\n  a:\n    index: 1\n    memory: 1M\n  b:\n    index: 1\n"
	_, err := Parse("f.yaml", []byte(src), Options{})
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatal(err)
	}
	want := []string{
		"f.yaml:4: vms.a.memory: memory 1M is below the minimum of 128M (sizes take units: 512M, 1G)",
		"f.yaml:6: vms.b.index: index 1 is also used by a",
	}
	if len(ps) != len(want) {
		t.Fatalf("got %d problems:\n%v", len(ps), err)
	}
	for i, w := range want {
		if ps[i].String() != w {
			t.Errorf("problem %d = %q, want %q", i, ps[i], w)
		}
	}
}

func TestAllProblemsAtOnce(t *testing.T) {
	src := `
vms:
  a: { index: 1, vcpu: 0, memory: 1M, hypervisor: xen, bogus: 1 }
  b: { subnet: nope }
network:
  allow: [{ from: a, to: z, ports: [80] }]
`
	_, err := Parse("f.yaml", []byte(src), Options{})
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatal(err)
	}
	if len(ps) != 6 {
		t.Errorf("want 6 problems reported together, got %d:\n%v", len(ps), err)
	}
}

func TestDecodeProblemSuppressesFollowUps(t *testing.T) {
	_, err := Parse("f.yaml", []byte("vms: { a: { index: one } }"), Options{})
	if got := err.Error(); strings.Count(got, "\n") != 0 || !strings.Contains(got, "expected a whole number") {
		t.Errorf("want only the type problem, got:\n%s", got)
	}
}

func TestLimitsMergeAndParse(t *testing.T) {
	c := mustParse(t, "defaults: { limits: { cpuWeight: 50 } }\nvms: { a: { index: 1, limits: { cpus: 1.5, memory: 1G } }, b: { index: 2 } }", Options{})
	if got := c.VM("a").Limits; got != (Limits{CPUs: 1.5, Memory: GiB}) {
		t.Errorf("a limits = %+v (a VM's limits replace the defaults' as a whole)", got)
	}
	if got := c.VM("b").Limits; got != (Limits{CPUWeight: 50}) {
		t.Errorf("b limits = %+v", got)
	}
	if c.VM("a").SpecHash() == mustParse(t, "vms: { a: { index: 1 } }", Options{}).VM("a").SpecHash() {
		t.Error("limits do not change the spec hash")
	}
}

func TestForHost(t *testing.T) {
	c := mustParse(t, `vms:
  a: { index: 1, host: h1, healthCheck: { tcp: 8080 } }
  b: { index: 2, host: h1 }
  c: { index: 3, host: h2 }
network:
  allow: [{ from: a, to: b, ports: [80] }]
  forwards: [{ hostPort: 8080, to: "a:8080" }, { hostPort: 8081, to: "c:80" }]
`, Options{})
	h1 := c.ForHost("h1")
	if len(h1.VMs) != 2 || h1.VM("c") != nil || len(h1.Allow) != 1 || len(h1.Forwards) != 1 {
		t.Errorf("h1 = %d VMs, %d allows, %d forwards", len(h1.VMs), len(h1.Allow), len(h1.Forwards))
	}
	// An apply composes the source again: it holds h1's VMs and rules only.
	again, err := ParseWith("h1", h1.Source, nil, Options{})
	if err != nil || len(again.VMs) != 2 || again.VM("c") != nil || len(again.Allow) != 1 || len(again.Forwards) != 1 {
		t.Errorf("h1's source parsed again: %v, %+v", err, again)
	}
	if h3 := c.ForHost("h3"); len(h3.VMs) != 0 {
		t.Errorf("an unnamed host runs %d VMs", len(h3.VMs))
	}
	if len(c.VMs) != 3 {
		t.Error("ForHost changed the whole file")
	}
	if c.VM("a").Supervision.HealthCheck == nil || c.VM("a").Supervision.HealthCheck.TCP != 8080 {
		t.Error("healthCheck lost")
	}
	all := mustParse(t, "vms: { a: { index: 1 }, b: { index: 2 } }", Options{})
	if all.ForHost("anything") != all {
		t.Error("a file naming no host is not wholly every host's")
	}
}

// egress: none is short for internet: false; egress does not change the
// spec hash (a firewall change restarts no VM).
func TestEgressMerge(t *testing.T) {
	cfg := mustParse(t, `
defaults: { egress: { deny: [{ to: 10.0.0.0/8 }] } }
vms:
  a: { index: 1 }
  b: { index: 2, egress: none }
`, Options{})
	a, b := cfg.VM("a"), cfg.VM("b")
	if len(a.Egress.Deny) != 1 || a.Egress.Offline() || !b.Egress.Offline() || len(b.Egress.Deny) != 0 {
		t.Errorf("a %+v, b %+v", a.Egress, b.Egress)
	}
	c := *a
	c.Egress = Egress{}
	if c.SpecHash() != a.SpecHash() {
		t.Error("egress changed the spec hash")
	}
}

// The VMs' domain is the file's in lower case (default microvm.internal),
// in every VM's net; host.dns takes addresses with or without a port.
func TestDomainAndDNS(t *testing.T) {
	cfg := mustParse(t, "host: { dns: [192.0.2.53, \"[2001:db8::1]:5353\"] }\nnetwork: { domain: Lab.Example. }\nvms: { a: { index: 1 } }", Options{})
	if cfg.Domain != "lab.example" || cfg.VMs[0].Net.Domain != "lab.example" || len(cfg.Host.DNS) != 2 {
		t.Errorf("domain %q, a's %q, dns %v", cfg.Domain, cfg.VMs[0].Net.Domain, cfg.Host.DNS)
	}
	if cfg := mustParse(t, "vms: { a: { index: 1 } }", Options{}); cfg.Domain != DefaultDomain {
		t.Errorf("default domain %q", cfg.Domain)
	}
}

// IPv6 networks: the ULA scheme from the IPv4 subnet (NAT66), a routed
// prefix by index (no NAT), a VM's own subnet6, and none.
func TestIPv6Networks(t *testing.T) {
	cfg := mustParse(t, "vms: { a: { index: 1 }, b: { subnet: 192.168.50.0/24 }, c: { index: 3, subnet6: \"2001:db8:9::/64\" } }", Options{})
	for name, want := range map[string]string{"a": "fd6d:6963:a01::/64 fd6d:6963:a01::1 fd6d:6963:a01::2 false", "b": "fd6d:6963:c0a8:3200::/64 fd6d:6963:c0a8:3200::1 fd6d:6963:c0a8:3200::2 false",
		"c": "2001:db8:9::/64 2001:db8:9::1 2001:db8:9::2 true"} {
		n := cfg.VM(name).Net
		if got := fmt.Sprint(n.Subnet6, " ", n.Gateway6, " ", n.Address6, " ", n.Routed6); got != want {
			t.Errorf("%s: %s, want %s", name, got, want)
		}
	}
	cfg = mustParse(t, "host: { ipv6Prefix: \"2001:db8:42::/48\" }\nvms: { a: { index: 7 } }", Options{})
	if n := cfg.VM("a").Net; n.Subnet6.String() != "2001:db8:42:7::/64" || !n.Routed6 {
		t.Errorf("routed: %s routed %v", n.Subnet6, n.Routed6)
	}
	cfg = mustParse(t, "host: { ipv6Prefix: none }\nvms: { a: { index: 7 } }", Options{})
	if n := cfg.VM("a").Net; n.HasIPv6() {
		t.Errorf("none: %s", n.Subnet6)
	}
}

// WithImages pins VMs' images in the file: an entry's own image replaced,
// one from the defaults written into the entry; the rest unchanged.
func TestWithImages(t *testing.T) {
	src := "defaults: { image: \"r.example/app:1\", memory: 256M }\nvms:\n  a: { index: 1 }\n  b:\n    index: 2\n    image: r.example/db:2 # the database\n  c: { index: 3 }\n"
	out, err := WithImages([]byte(src), map[string]string{"a": "r.example/app@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "b": "r.example/db@sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse("infra.yaml", out, Options{})
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for name, want := range map[string]string{"a": "r.example/app@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "b": "r.example/db@sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "c": "r.example/app:1"} {
		if got := cfg.VM(name).Image; got != want {
			t.Errorf("%s: image %q, want %q\n%s", name, got, want, out)
		}
	}
	if cfg.VM("a").Memory.MiB() != 256 {
		t.Errorf("a lost the defaults' memory:\n%s", out)
	}
	if _, err := WithImages([]byte(src), map[string]string{"zz": "x@sha256:1"}); err == nil {
		t.Error("a VM not in the file was pinned")
	}
}

// A VM's registry logins are laid over the host's, registry by registry.
func TestVMRegistriesOverTheHost(t *testing.T) {
	cfg := mustParse(t, `host: { registries: { r.test: { username: host, password: `+testSecret+` }, other.test: { username: host, password: `+testSecret+` } } }
vms:
  a: { index: 1, registries: { r.test: { username: vm, password: `+testSecret+` } } }
  b: { index: 2 }
`, Options{})
	if a := cfg.VM("a").Supervision.Registries; a["r.test"].Username != "vm" || a["other.test"].Username != "host" {
		t.Errorf("a's logins = %+v, want its own for r.test and the host's for other.test", a)
	}
	if b := cfg.VM("b").Supervision.Registries; b["r.test"].Username != "host" || len(b) != 2 {
		t.Errorf("b's logins = %+v, want the host's", b)
	}
}
