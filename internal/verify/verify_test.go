package verify

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/tailnet"
	"microvm.dev/microvm/internal/testutil"
)

// The host here has QEMU but neither cloud-hypervisor nor Firecracker (they
// cannot be installed on this machine); look stands in for PATH so the
// checks are tested for both outcomes.
func TestPrerequisites(t *testing.T) {
	dir := t.TempDir()
	bz, elf := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "vmlinux")
	os.WriteFile(bz, []byte("MZ compressed"), 0o644)
	os.WriteFile(elf, []byte("\x7fELF\x02\x01\x01\x00"), 0o644)
	os.WriteFile(filepath.Join(dir, "modules.dep"), nil, 0o644)
	src := `
vms:
  a: { index: 1, kernel: { path: ` + bz + `, modules: ` + dir + ` } }
  b: { index: 2, hypervisor: firecracker, kernel: { path: ` + bz + `, modules: ` + dir + ` } }
  c: { index: 3, hypervisor: firecracker, kernel: { path: ` + elf + `, modules: ` + dir + ` }, limits: { cpus: 1 } }
`
	cfg, err := config.Parse("t.yaml", []byte(src), config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	installed := map[string]string{"qemu-system-x86_64": "/usr/bin/qemu-system-x86_64", "nft": "/usr/sbin/nft"}
	look := func(f string) (string, error) {
		if p, ok := installed[f]; ok {
			return p, nil
		}
		return "", errors.New("not found")
	}
	env := launch.Env{StateDir: t.TempDir(), Arch: "x86_64", Share: "auto"}
	got := map[string]Result{}
	for _, r := range Run(Prerequisites(cfg, env, look)) {
		got[r.Name] = r
	}
	want := map[string]struct {
		st   Status
		text string
	}{
		"hypervisor qemu":             {Pass, "/usr/bin/qemu-system-x86_64 for VM a"},
		"hypervisor firecracker":      {Fail, "firecracker is not installed (not in PATH), needed by VMs b, c"},
		"kernel of a":                 {Pass, bz},
		"kernel of b":                 {Fail, "uncompressed ELF kernel"},
		"kernel of c":                 {Pass, elf},
		"store share for firecracker": {Pass, "block"},
		"mkfs.ext4":                   {Fail, "apt install e2fsprogs"},
		"nftables":                    {Pass, "/usr/sbin/nft"},
		"cgroups":                     {Fail, "VM c set limits"},
	}
	for name, w := range want {
		r, ok := got[name]
		if !ok {
			t.Errorf("no check %q (have %v)", name, got)
			continue
		}
		if r.Status != w.st || !strings.Contains(r.Evidence, w.text) {
			t.Errorf("%s = %s %q, want %s containing %q", name, r.Status, r.Evidence, w.st, w.text)
		}
	}
	if n := Failed(Run(Prerequisites(cfg, env, look))); n != 4 {
		t.Errorf("failed = %d, want 4", n)
	}
}

func TestCloudHypervisorWithoutVirtiofsdFails(t *testing.T) {
	cfg, err := config.Parse("t.yaml", []byte("vms: { a: { index: 1, hypervisor: cloud-hypervisor } }"), config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	env := launch.Env{StateDir: t.TempDir(), Share: "9p"}
	for _, r := range Run(Prerequisites(cfg, env, nil)) {
		if r.Name == "store share for cloud-hypervisor" {
			if r.Status != Fail || !strings.Contains(r.Evidence, "cannot share the store over 9p") {
				t.Errorf("got %s %q", r.Status, r.Evidence)
			}
			return
		}
	}
	t.Error("no store share check")
}

func TestDoctor(t *testing.T) {
	missing := func(string) (string, error) { return "", errors.New("not found") }
	got := map[string]Result{}
	for _, r := range Run(Doctor(launch.Env{Arch: "x86_64", KernelCache: t.TempDir()}, missing)) {
		got[r.Name] = r
	}
	for name, fix := range map[string]string{"qemu": "apt install qemu-system-x86", "nftables": "apt install nftables", "mkfs.ext4": "apt install e2fsprogs"} {
		if r := got[name]; r.Status != Fail || !strings.Contains(r.Evidence, "fix: "+fix) {
			t.Errorf("%s = %s %q, want FAIL with fix %q", name, r.Status, r.Evidence, fix)
		}
	}
	for _, name := range []string{"kvm", "tun", "vhost-net", "cgroups", "virtiofsd", "guest kernel"} {
		if _, ok := got[name]; !ok {
			t.Errorf("no %s check", name)
		}
	}
	if r := got["kvm"]; r.Status == Fail {
		t.Error("a host without KVM fails; it should only warn (TCG works)")
	}
}

// Against Tailscale's own tailscaled (tools/tailnet), in userspace mode,
// and its test control server, which approves only routes in 10.0.0.0/8
// (as an autoApprovers policy may): logged out fails saying so; the IPv6
// routes advertised but not approved fail naming them; userspace
// networking fails the node check (the firewall cannot tell tailnet
// connections from the host's); no tailscale installed is a skip.
func TestTailscaleChecks(t *testing.T) {
	tools, ns, url, node := testutil.TailnetHost(t, "vts", "10.0.0.0/8")
	cfg, err := config.Parse("t.yaml", []byte("host: { tailscale: { advertiseRoutes: true, socket: "+node.Socket+" } }\nvms: { a: { index: 1 }, b: { index: 2 } }"), config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	client := tailnet.Client{Bin: tools.Tailscale}
	run := func(f Fleet) map[string]Result {
		out := map[string]Result{}
		for _, c := range Live(f) {
			if strings.Contains(c.Name, "tailscale") || strings.Contains(c.Name, "tailnet") {
				st, ev := c.Run()
				out[c.Name] = Result{Name: c.Name, Status: st, Evidence: ev}
			}
		}
		return out
	}
	f := Fleet{Config: cfg, NetNS: ns.Path, Tailscale: client, Status: func(string) (apitypes.VMStatus, bool) { return apitypes.VMStatus{}, false }}
	if r := run(f)["tailscale node"]; r.Status != Fail || !strings.Contains(r.Evidence, "NeedsLogin") || !strings.Contains(r.Evidence, "tailscale up") {
		t.Errorf("logged out: %+v", r)
	}
	node.Up(t, url, "hv")
	if r := run(f)["tailscale routes"]; r.Status != Fail || !strings.Contains(r.Evidence, "want the VM subnets [10.1.0.0/24 10.2.0.0/24 fd6d:6963:a01::/64 fd6d:6963:a02::/64]") {
		t.Errorf("nothing advertised: %+v", r)
	}
	var subnets []netip.Prefix
	for _, vm := range cfg.VMs {
		subnets = append(subnets, vm.Net.Subnets()...)
	}
	if _, err := client.WithSocket(node.Socket).Sync(context.Background(), subnets, nil); err != nil {
		t.Fatal(err)
	}
	var got map[string]Result
	deadline := time.Now().Add(30 * time.Second)
	for {
		got = run(f)
		if r := got["tailscale routes"]; strings.Contains(r.Evidence, "has not approved fd6d") || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if r := got["tailscale routes"]; r.Status != Fail || !strings.Contains(r.Evidence, "the tailnet has not approved fd6d:6963:a01::/64, fd6d:6963:a02::/64: approve them") {
		t.Errorf("IPv6 routes not approved: %+v", r)
	}
	if r := got["tailscale node"]; r.Status != Fail || !strings.Contains(r.Evidence, "on the tailnet as 100.") || !strings.Contains(r.Evidence, "userspace-networking") {
		t.Errorf("userspace node: %+v", r)
	}
	if r := got["tailnet → VM SSH"]; r.Status != Skip {
		t.Errorf("SSH over the tailnet without a TUN: %+v", r)
	}
	f.Tailscale = tailnet.Client{Bin: filepath.Join(t.TempDir(), "none")}
	for name, r := range run(f) {
		if r.Status != Skip || !strings.Contains(r.Evidence, "not installed") {
			t.Errorf("no tailscale, %s: %+v", name, r)
		}
	}
}

// The hypervisor check reads /proc: root is a SKIP, a process dropped as
// microvm drops hypervisors a PASS, one keeping its bounding set a FAIL.
func TestHypervisorPrivileges(t *testing.T) {
	testutil.RequireRoot(t)
	if st, ev := hypervisorPrivileges(os.Getpid()); st != Skip || !strings.Contains(ev, "runs as root") {
		t.Errorf("root: %s %s", st, ev)
	}
	for _, c := range []struct {
		args []string
		want Status
	}{
		{[]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"}, Pass},
		{[]string{"--reuid=65534", "--regid=65534", "--clear-groups"}, Fail},
	} {
		cmd := exec.Command("setpriv", append(c.args, "--", "sleep", "10")...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		st, ev := hypervisorPrivileges(cmd.Process.Pid)
		cmd.Process.Kill()
		cmd.Wait()
		if st != c.want {
			t.Errorf("setpriv %v: %s %s, want %s", c.args, st, ev, c.want)
		}
	}
}

// Unconfined reads which namespaces a hypervisor shares with the caller
// from its /proc entry (fake /proc entries here; the e2e test reads real
// ones).
func TestUnconfined(t *testing.T) {
	proc := func(mnt, pid string) string {
		d := t.TempDir()
		os.Mkdir(filepath.Join(d, "ns"), 0o755)
		os.Symlink("mnt:["+mnt+"]", filepath.Join(d, "ns", "mnt"))
		os.Symlink("pid:["+pid+"]", filepath.Join(d, "ns", "pid"))
		return d
	}
	self := proc("1", "1")
	if lacks, err := Unconfined(proc("2", "3"), self); err != nil || len(lacks) != 0 {
		t.Errorf("a confined hypervisor lacks %v (%v)", lacks, err)
	}
	lacks, err := Unconfined(proc("1", "1"), self)
	if want := "its own mount namespace, its own PID namespace"; err != nil || strings.Join(lacks, ", ") != want {
		t.Errorf("an unconfined hypervisor lacks %q (%v), want %q", strings.Join(lacks, ", "), err, want)
	}
	if lacks, _ := Unconfined(proc("2", "1"), self); strings.Join(lacks, ", ") != "its own PID namespace" {
		t.Errorf("a mount namespace only: lacks %v", lacks)
	}
	if _, err := Unconfined(filepath.Join(t.TempDir(), "gone"), self); err == nil {
		t.Error("a process that is gone: no error")
	}
}

// A VM's DNS check passes when its own full name and another VM's bare
// name resolve to their addresses in the guest, and names what is wrong.
func TestVMNames(t *testing.T) {
	cfg, err := config.Parse("t.yaml", []byte("vms: { a: { index: 1 }, b: { index: 2 } }"), config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.VM("a")
	if st, ev := vmNames(cfg, a, map[string]string{"dns a": "10.1.0.2,fd6d:6963:a01::2", "dns b": "10.2.0.2,fd6d:6963:a02::2"}); st != Pass ||
		ev != "a.microvm.internal is 10.1.0.2,fd6d:6963:a01::2, b is 10.2.0.2,fd6d:6963:a02::2" {
		t.Errorf("resolved: %s %q", st, ev)
	}
	st, ev := vmNames(cfg, a, map[string]string{"dns a": "10.1.0.2,fd6d:6963:a01::2", "dns b": "failed: lookup b: server misbehaving"})
	if st != Fail || !strings.Contains(ev, `b resolves to "failed: lookup b: server misbehaving", want 10.2.0.2,fd6d:6963:a02::2`) || !strings.Contains(ev, "10.1.0.1:53") {
		t.Errorf("failed: %s %q", st, ev)
	}
}
