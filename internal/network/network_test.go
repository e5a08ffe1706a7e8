package network

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/hostnet"
	"microvm.dev/microvm/internal/testutil"
)

// The lab: a "host" namespace (where microvm applies the network), an
// "internet" namespace behind the host's uplink, and one namespace per VM
// standing in for the guest, attached to the VM's bridge by a veth in place
// of the TAP. Addresses are TEST-NET-3 and the VM subnets; every packet stays
// inside these namespaces.
const labConfig = `
host: { externalInterface: auto }
vms:
  vm1: { index: 1, ports: [8080] }
  vm2: { index: 2 }
  db:  { subnet: 192.168.50.0/24 }
network:
  allow:
    - { from: vm1, to: db, ports: ["5432/tcp"] }
  forwards:
    - { hostPort: 8080, to: "vm1:8080" }
`

const (
	uplinkAddr   = "203.0.113.1"
	internetAddr = "203.0.113.2"
	dialTimeout  = 1500 * time.Millisecond
)

type lab struct {
	host, inet *testutil.Netns
	vms        map[string]*testutil.Netns
	cfg        *config.Config
	m          *Manager
}

func newLab(t *testing.T, src string) *lab {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "nft")
	l := &lab{host: testutil.NewNetns(t, "host"), inet: testutil.NewNetns(t, "inet"), vms: map[string]*testutil.Netns{}}
	testutil.Veth(t, l.host, "uplink0", l.inet, "wan0")
	l.host.IP(t, "addr", "add", uplinkAddr+"/24", "dev", "uplink0")
	l.host.IP(t, "link", "set", "uplink0", "up")
	l.host.IP(t, "route", "add", "default", "via", internetAddr)
	l.inet.IP(t, "addr", "add", internetAddr+"/24", "dev", "wan0")
	l.inet.IP(t, "link", "set", "wan0", "up")
	// The tailnet/LAN side knows the VM networks are behind the host.
	l.inet.IP(t, "route", "add", "10.0.0.0/8", "via", uplinkAddr)
	l.inet.IP(t, "route", "add", "192.168.0.0/16", "via", uplinkAddr)

	var err error
	if l.cfg, err = config.Parse("lab.yaml", []byte(src), config.Options{}); err != nil {
		t.Fatal(err)
	}
	if l.m, err = New(l.host.Path, hostnet.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.m.Close)
	return l
}

// attachGuests gives each VM a guest namespace on its bridge.
func (l *lab) attachGuests(t *testing.T) {
	t.Helper()
	for _, vm := range l.cfg.VMs {
		g := testutil.NewNetns(t, vm.Name)
		port := "p-" + vm.Name
		testutil.Veth(t, l.host, port, g, "eth0")
		l.host.IP(t, "link", "set", port, "master", vm.Net.Bridge)
		l.host.IP(t, "link", "set", port, "up")
		g.IP(t, "link", "set", "eth0", "address", vm.Net.MAC)
		g.IP(t, "addr", "add", vm.Net.Address.String()+"/"+itoa(vm.Net.Subnet.Bits()), "dev", "eth0")
		g.IP(t, "link", "set", "eth0", "up")
		g.IP(t, "route", "add", "default", "via", vm.Net.Gateway.String())
		l.vms[vm.Name] = g
	}
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

func TestIsolationNATAndForwards(t *testing.T) {
	l := newLab(t, labConfig)
	res, err := l.m.Apply(l.cfg)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if res.Uplink != "uplink0" || !res.Firewall {
		t.Fatalf("apply result: %+v", res)
	}
	l.attachGuests(t)
	vm1, vm2, db := l.vms["vm1"], l.vms["vm2"], l.vms["db"]
	l.inet.Serve(t, internetAddr+":9000")
	vm1.Serve(t, "0.0.0.0:8080")
	vm1.Serve(t, "0.0.0.0:9000")
	vm2.Serve(t, "0.0.0.0:9000")
	db.Serve(t, "0.0.0.0:5432")
	db.Serve(t, "0.0.0.0:5433")
	l.host.Serve(t, "0.0.0.0:2222") // a host service VMs must not reach

	ok := func(what string, got string, err error, wantPeer string) {
		t.Helper()
		if err != nil {
			t.Errorf("%s: want a connection, got %v", what, err)
		} else if wantPeer != "" && got != wantPeer {
			t.Errorf("%s: the server saw %s, want %s", what, got, wantPeer)
		}
	}
	blocked := func(what string, _ string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: connected, want it dropped", what)
		}
	}

	if !vm1.Ping(t, "10.1.0.1") {
		t.Error("vm1 cannot ping its gateway")
	}
	if vm1.Ping(t, "10.2.0.1") {
		t.Error("vm1 can ping vm2's gateway")
	}
	got, err := vm1.Dial(t, "", internetAddr+":9000", dialTimeout)
	ok("vm1 → internet (masqueraded)", got, err, uplinkAddr)
	got, err = db.Dial(t, "", internetAddr+":9000", dialTimeout)
	ok("db → internet (masqueraded)", got, err, uplinkAddr)

	got, err = vm1.Dial(t, "", "10.2.0.2:9000", dialTimeout)
	blocked("vm1 → vm2", got, err)
	got, err = vm2.Dial(t, "", "10.1.0.2:9000", dialTimeout)
	blocked("vm2 → vm1", got, err)

	got, err = vm1.Dial(t, "", "192.168.50.2:5432", dialTimeout)
	ok("vm1 → db:5432 (allowed)", got, err, "10.1.0.2")
	got, err = vm1.Dial(t, "", "192.168.50.2:5433", dialTimeout)
	blocked("vm1 → db:5433 (neighbouring port)", got, err)
	got, err = db.Dial(t, "", "10.1.0.2:9000", dialTimeout)
	blocked("db → vm1 (allow is one-way)", got, err)

	got, err = l.inet.Dial(t, "", uplinkAddr+":8080", dialTimeout)
	ok("internet → host:8080 forwarded to vm1:8080", got, err, internetAddr)
	got, err = l.host.Dial(t, "", uplinkAddr+":8080", dialTimeout)
	ok("host → its own uplink address:8080 forwarded to vm1", got, err, "")
	got, err = vm2.Dial(t, "", uplinkAddr+":8080", dialTimeout)
	blocked("vm2 → host:8080 (a forward is no path between VMs)", got, err)

	got, err = l.inet.Dial(t, "", "10.1.0.2:8080", dialTimeout)
	ok("tailnet/LAN → vm1's declared port 8080", got, err, internetAddr)
	got, err = l.inet.Dial(t, "", "10.1.0.2:9000", dialTimeout)
	blocked("tailnet/LAN → vm1's undeclared port 9000", got, err)

	got, err = vm1.Dial(t, "", "10.1.0.1:2222", dialTimeout)
	blocked("vm1 → host service on its gateway", got, err)
	got, err = vm1.Dial(t, "", uplinkAddr+":2222", dialTimeout)
	blocked("vm1 → host service on the uplink address", got, err)
	got, err = l.inet.Dial(t, "", uplinkAddr+":2222", dialTimeout)
	ok("internet → host service (host input untouched without allowedTCPPorts)", got, err, internetAddr)
	got, err = l.host.Dial(t, "", "10.1.0.2:9000", dialTimeout)
	ok("host → vm1 (management access)", got, err, "10.1.0.1")

	// Spoofing: a second address in vm1's subnet is not vm1's.
	vm1.IP(t, "addr", "add", "10.1.0.99/24", "dev", "eth0")
	got, err = vm1.Dial(t, "10.1.0.99", internetAddr+":9000", dialTimeout)
	blocked("vm1 with spoofed source 10.1.0.99", got, err)
	// And vm1's address from a foreign MAC is dropped too.
	vm1.IP(t, "link", "set", "eth0", "address", "02:00:00:00:00:99")
	vm1.Exec("ip", "neigh", "flush", "all")
	got, err = vm1.Dial(t, "", internetAddr+":9000", dialTimeout)
	blocked("vm1 with a spoofed MAC", got, err)
}

func TestApplyTwiceChangesNothing(t *testing.T) {
	l := newLab(t, labConfig)
	first, err := l.m.Apply(l.cfg)
	if err != nil || !first.Changed() {
		t.Fatalf("first apply: %+v, %v", first, err)
	}
	second, err := l.m.Apply(l.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if second.Changed() {
		t.Fatalf("second apply changed things: firewall=%v links=%v", second.Firewall, second.Links)
	}
	st, err := l.m.Show(l.cfg)
	if err != nil || !st.InSync {
		t.Fatalf("show after apply: %+v, %v", st, err)
	}
}

func TestRepairsDrift(t *testing.T) {
	l := newLab(t, labConfig)
	if _, err := l.m.Apply(l.cfg); err != nil {
		t.Fatal(err)
	}
	// Drift: a TAP deleted, a bridge taken down, a rule added to our table,
	// a stale address on a bridge.
	l.host.IP(t, "link", "del", "vm-vm2")
	l.host.IP(t, "link", "set", "br-vm1", "down")
	l.host.IP(t, "addr", "add", "10.1.0.77/24", "dev", "br-vm1")
	if out, err := l.host.Exec("nft", "add", "rule", "inet", "microvm", "forward", "accept"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	res, err := l.m.Apply(l.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Firewall {
		t.Error("a rule added by hand to microvm's table was not repaired")
	}
	want := map[string]bool{"create-tuntap vm-vm2": true, "set-up br-vm1": true, "delete-addr 10.1.0.77/24 on br-vm1": true}
	for _, c := range res.Links {
		delete(want, c.String())
	}
	if len(want) > 0 {
		t.Errorf("repairs missing %v; did %v", want, res.Links)
	}
	if again, _ := l.m.Apply(l.cfg); again.Changed() {
		t.Errorf("not converged after repair: %+v", again)
	}
}

func TestRemovedVMLosesItsNetwork(t *testing.T) {
	l := newLab(t, labConfig)
	if _, err := l.m.Apply(l.cfg); err != nil {
		t.Fatal(err)
	}
	smaller, err := config.Parse("lab.yaml", []byte(strings.Replace(labConfig, "  vm2: { index: 2 }\n", "", 1)), config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := l.m.Apply(smaller)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, c := range res.Links {
		got[c.String()] = true
	}
	if !got["delete-tuntap vm-vm2"] || !got["delete-bridge br-vm2"] || len(res.Links) != 2 || !res.Firewall {
		t.Errorf("removing vm2 did: %+v", res)
	}
	if _, err := l.host.Exec("ip", "link", "show", "br-vm2"); err == nil {
		t.Error("br-vm2 still exists")
	}
}

func TestForeignThingsSurvive(t *testing.T) {
	l := newLab(t, labConfig)
	l.host.IP(t, "link", "add", "br-foreign", "type", "bridge")
	l.host.IP(t, "addr", "add", "172.31.9.1/24", "dev", "br-foreign")
	cmd := exec.Command("ip", "netns", "exec", l.host.Name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader("table inet foreign {\n chain input { type filter hook input priority 10; policy accept; tcp dport 9999 counter accept; }\n}\ntable ip natty {\n chain post { type nat hook postrouting priority 100; }\n}\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("load foreign tables: %v\n%s", err, out)
	}
	if _, err := l.m.Apply(l.cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := l.m.Teardown(); err != nil {
		t.Fatal(err)
	}
	out, err := l.host.Exec("nft", "list", "ruleset")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "table inet foreign") || !strings.Contains(out, "tcp dport 9999") || !strings.Contains(out, "table ip natty") {
		t.Errorf("foreign tables did not survive:\n%s", out)
	}
	if strings.Contains(out, "table inet microvm") {
		t.Errorf("teardown left microvm's table:\n%s", out)
	}
	links, _ := l.host.Exec("ip", "-br", "addr")
	if !strings.Contains(links, "br-foreign") || !strings.Contains(links, "172.31.9.1/24") {
		t.Errorf("the foreign bridge did not survive:\n%s", links)
	}
	for _, name := range []string{"br-vm1", "vm-vm1", "br-db", "vm-db"} {
		if strings.Contains(links, name) {
			t.Errorf("teardown left %s:\n%s", name, links)
		}
	}
	if st, _ := l.m.Host().Show(); len(st) != 0 {
		t.Errorf("microvm interfaces remain: %+v", st)
	}
}

func TestConflictsChangeNothing(t *testing.T) {
	l := newLab(t, labConfig)
	// A foreign interface holding a VM's bridge name, and a foreign address
	// inside another VM's subnet.
	l.host.IP(t, "link", "add", "br-vm2", "type", "bridge")
	l.host.IP(t, "link", "add", "lan9", "type", "bridge")
	l.host.IP(t, "addr", "add", "192.168.50.7/24", "dev", "lan9")
	before, _ := l.host.Exec("ip", "-br", "addr")
	_, err := l.m.Apply(l.cfg)
	var ce *hostnet.ConflictError
	if !errors.As(err, &ce) || len(ce.Problems) != 2 {
		t.Fatalf("want two conflicts, got %v", err)
	}
	if !strings.Contains(err.Error(), "interface br-vm2 (bridge) exists and is not managed by microvm") ||
		!strings.Contains(err.Error(), "address 192.168.50.7/24 on interface lan9 overlaps db's subnet") {
		t.Errorf("conflict message: %v", err)
	}
	after, _ := l.host.Exec("ip", "-br", "addr")
	if before != after {
		t.Errorf("a refused apply changed interfaces:\n%s\n→\n%s", before, after)
	}
	if loaded, _ := (l.m.fw).Loaded(); loaded.Present {
		t.Error("a refused apply loaded the firewall table")
	}
	if _, err := l.m.Teardown(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.host.Exec("ip", "link", "show", "br-vm2"); err != nil {
		t.Error("teardown deleted the foreign br-vm2")
	}
}

func TestMissingUplinkIsAnError(t *testing.T) {
	l := newLab(t, strings.Replace(labConfig, "externalInterface: auto", "externalInterface: eth7", 1))
	_, err := l.m.Apply(l.cfg)
	if err == nil || !strings.Contains(err.Error(), `host.externalInterface "eth7": no such interface`) {
		t.Fatalf("want a missing-uplink error, got %v", err)
	}
}

// The egress policy with real traffic: a "cloud metadata" listener at
// 169.254.169.254 answers the host but no VM; a fleet-wide deny closes a
// LAN that one VM's own allow opens for exactly one port; egress: none
// leaves a VM its gateway and nothing beyond.
func TestEgressPolicy(t *testing.T) {
	l := newLab(t, `
host: { externalInterface: auto }
vms:
  vm1: { index: 1 }
  vm2: { index: 2, egress: { allow: [{ to: 198.51.100.10, ports: ["5432/tcp"] }] } }
  off: { index: 3, egress: none }
network:
  egress:
    deny: [{ to: 198.51.100.0/24 }]
`)
	if _, err := l.m.Apply(l.cfg); err != nil {
		t.Fatalf("apply: %v", err)
	}
	l.attachGuests(t)
	for _, a := range []string{"169.254.169.254/32", "198.51.100.10/32"} {
		l.inet.IP(t, "addr", "add", a, "dev", "lo")
	}
	l.inet.Serve(t, "169.254.169.254:80")
	l.inet.Serve(t, "198.51.100.10:5432")
	l.inet.Serve(t, "198.51.100.10:5433")
	l.inet.Serve(t, internetAddr+":9000")
	vm1, vm2, off := l.vms["vm1"], l.vms["vm2"], l.vms["off"]
	check := func(what string, g *testutil.Netns, addr string, want bool) {
		t.Helper()
		_, err := g.Dial(t, "", addr, dialTimeout)
		if got := err == nil; got != want {
			t.Errorf("%s (%s): connected %v, want %v (%v)", what, addr, got, want, err)
		}
	}
	check("the host → metadata", l.host, "169.254.169.254:80", true)
	check("vm1 → metadata", vm1, "169.254.169.254:80", false)
	check("vm2 → metadata", vm2, "169.254.169.254:80", false)
	check("vm1 → internet", vm1, internetAddr+":9000", true)
	check("vm1 → the denied LAN", vm1, "198.51.100.10:5432", false)
	check("vm2 → its allowed LAN port", vm2, "198.51.100.10:5432", true)
	check("vm2 → the LAN's next port", vm2, "198.51.100.10:5433", false)
	check("off → internet", off, internetAddr+":9000", false)
	check("off → metadata", off, "169.254.169.254:80", false)
	if !off.Ping(t, "10.3.0.1") {
		t.Error("egress: none took the VM's gateway too")
	}
	if off.Ping(t, internetAddr) {
		t.Error("egress: none still pings the internet")
	}
	testutil.Report(t, testutil.FaultResult{Fault: "VMs reaching for the cloud metadata service (169.254.169.254) and a denied LAN", Trials: 9,
		Result: "dropped by the egress policy (the host still reaches it); one VM's allow opens exactly its port; egress: none leaves the gateway only"})
}

// A VM whose hypervisor opens its TAP by name under an id of its own gets
// a TAP owned by that id (OwnTAPs); the others keep the shared owner; a
// changed owner makes an unused TAP again.
func TestTAPOwners(t *testing.T) {
	l := newLab(t, labConfig)
	owners := map[string]hostnet.Owner{"vm2": {UID: 1879048195, GID: 1879048195}}
	l.m.OwnTAPs(func(*config.Config, bool) (map[string]hostnet.Owner, error) { return owners, nil })
	if _, err := l.m.Apply(l.cfg); err != nil {
		t.Fatal(err)
	}
	owner := func(tap string) string {
		out, err := l.host.Exec("cat", "/sys/class/net/"+tap+"/owner", "/sys/class/net/"+tap+"/group")
		if err != nil {
			t.Fatalf("%s: %v %s", tap, err, out)
		}
		return strings.Join(strings.Fields(out), ":")
	}
	if got := owner("vm-vm2"); got != "1879048195:1879048195" {
		t.Errorf("vm2's TAP is owned by %s", got)
	}
	if got := owner("vm-vm1"); got != "0:0" {
		t.Errorf("vm1's TAP is owned by %s, want the shared owner (root here)", got)
	}
	owners["vm2"] = hostnet.Owner{UID: 1879048196, GID: 1879048196}
	res, err := l.m.Apply(l.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := owner("vm-vm2"); got != "1879048196:1879048196" || !strings.Contains(fmt.Sprint(res.Links), "vm-vm2") {
		t.Errorf("after the owner changed: %s (links %v)", got, res.Links)
	}
}

// On a Kubernetes node (host.serviceCIDRs), a VM reaches another VM through
// a Service address that a DNAT of its own table translates, as
// kube-proxy's nftables tables do (the e2e test runs kube-proxy itself),
// and still not that VM on its own address, nor an address of the range
// that nothing translates. The host reaches the Service too.
func TestServiceRangeThroughDNAT(t *testing.T) {
	l := newLab(t, "host: { externalInterface: auto, serviceCIDRs: [10.96.0.0/16] }\nvms: { a: { index: 1 }, b: { index: 2 } }\n")
	if _, err := l.m.Apply(l.cfg); err != nil {
		t.Fatalf("apply: %v", err)
	}
	l.attachGuests(t)
	a, b := l.vms["a"], l.vms["b"]
	b.Serve(t, "0.0.0.0:80")
	b.Serve(t, "0.0.0.0:81")
	l.host.IP(t, "route", "add", "10.96.0.0/16", "dev", "uplink0")
	// A table of its own, at kube-proxy's priorities: the Service
	// 10.96.0.10:80 is b's port 80.
	proxy := `table ip svc {
	chain pre { type nat hook prerouting priority dstnat; policy accept; ip daddr 10.96.0.10 tcp dport 80 dnat to 10.2.0.2:80; }
	chain out { type nat hook output priority -100; policy accept; ip daddr 10.96.0.10 tcp dport 80 dnat to 10.2.0.2:80; }
}
`
	file := filepath.Join(t.TempDir(), "svc.nft")
	if err := os.WriteFile(file, []byte(proxy), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := l.host.Exec("nft", "-f", file); err != nil {
		t.Fatalf("nft: %v\n%s", err, out)
	}
	got, err := a.Dial(t, "", "10.96.0.10:80", dialTimeout)
	if err != nil {
		t.Errorf("a → the Service 10.96.0.10:80 (b:80): %v", err)
	} else if got != "10.1.0.2" {
		t.Errorf("a → the Service: b saw %s, want a's own address", got)
	}
	if _, err := a.Dial(t, "", "10.2.0.2:80", dialTimeout); err == nil {
		t.Error("a → b:80 on b's own address: connected, want it dropped")
	}
	if _, err := a.Dial(t, "", "10.96.0.11:81", dialTimeout); err == nil {
		t.Error("a → an untranslated address of the Service range: connected")
	}
	if _, err := l.host.Dial(t, "", "10.96.0.10:80", dialTimeout); err != nil {
		t.Errorf("the host → the Service: %v", err)
	}
	// Without the range in the file, the same DNAT is no way through.
	cfg, err := config.Parse("lab.yaml", []byte("host: { externalInterface: auto }\nvms: { a: { index: 1 }, b: { index: 2 } }\n"), config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.m.Apply(cfg); err != nil {
		t.Fatalf("apply: %v", err)
	}
	if _, err := a.Dial(t, "", "10.96.0.10:80", dialTimeout); err == nil {
		t.Error("a → the Service without host.serviceCIDRs: connected, want it dropped")
	}
}

// Plan is a dry run of the reconcile: it lists exactly the link changes
// the next Apply makes, and makes none of them: on a fresh host, after a
// TAP was deleted by hand, after a VM's index moved, and with nothing to
// do.
func TestPlanIsTheApplysChanges(t *testing.T) {
	l := newLab(t, labConfig)
	links := func() string {
		out, err := l.host.Exec("ip", "-br", "link")
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	check := func(what string, cfg *config.Config) {
		t.Helper()
		before := links()
		planned, err := l.m.Plan(cfg)
		if err != nil {
			t.Fatalf("%s: plan: %v", what, err)
		}
		if after := links(); after != before {
			t.Fatalf("%s: the plan changed the links:\n%s\n→\n%s", what, before, after)
		}
		res, err := l.m.Apply(cfg)
		if err != nil {
			t.Fatalf("%s: apply: %v", what, err)
		}
		if fmt.Sprint(planned) != fmt.Sprint(res.Links) {
			t.Errorf("%s: the plan said\n  %v\nthe apply did\n  %v", what, planned, res.Links)
		}
	}
	check("a fresh host", l.cfg)
	check("nothing to do", l.cfg)
	l.host.IP(t, "link", "del", "vm-vm2")
	check("a TAP deleted by hand", l.cfg)
	moved, err := config.Parse("lab.yaml", []byte(strings.Replace(labConfig, "vm2: { index: 2 }", "vm2: { index: 7 }", 1)), config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	check("vm2's index moved", moved)
}
