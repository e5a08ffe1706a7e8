package e2e

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"microvm.dev/microvm/internal/testutil"
	"microvm.dev/microvm/internal/vmssh"
)

// tailnetFile is the fleet of TestTailnet: a serves port 8080, and the
// host's tailscaled is the test's (socket).
func tailnetFile(socket string, vms ...string) string {
	return fmt.Sprintf(`host: { externalInterface: lan0, allowedTCPPorts: [22], tailscale: { advertiseRoutes: true, socket: %s } }
defaults: { memory: 256M, stopTimeout: 20s }
vms:
%s`, socket, strings.Join(vms, ""))
}

const (
	tailnetA = "  a: { index: 1, ports: [8080] }\n"
	tailnetB = "  b: { index: 2 }\n"
	tailnetC = "  c: { index: 3 }\n"
)

// The reference setup's remote access (its Test 6) over a real tailnet:
// Tailscale's own tailscaled and tailscale (built from the tailscale.com
// module by tools/tailnet, TUN mode) on the host, which advertises the VM
// subnets through the daemon, and on a "laptop" in a namespace of its own
// joined to the host by a LAN; Tailscale's test control server (with a DERP
// relay, beyond the host's uplink) approves routes as autoApprovers
// would. The host filters its uplink (allowedTCPPorts). The host's tailscaled
// starts after the daemon and its VMs. From the laptop: a VM's SSH answers
// over IPv4 and IPv6 (a session runs, and a bulk transfer crosses the
// tunnel's smaller MTU), the declared port answers and another port of the
// VM does not; a VM removed from the file loses its route, a VM added is
// reachable with nothing done on the laptop; verify checks the path.
func TestTailnet(t *testing.T) {
	requireGuestEnv(t)
	tools := testutil.TailnetBinaries(t)
	l := newDaemonLab(t, "tsh")
	laptop := testutil.NewNetns(t, "tsl")
	testutil.Veth(t, l.ns, "lan0", laptop, "lan0")
	l.ns.IP(t, "addr", "add", "172.30.8.1/24", "dev", "lan0")
	l.ns.IP(t, "link", "set", "lan0", "up")
	laptop.IP(t, "addr", "add", "172.30.8.2/24", "dev", "lan0")
	laptop.IP(t, "link", "set", "lan0", "up")
	// The control server and its DERP are beyond the host's uplink (here,
	// on the laptop's side of it), as Tailscale's are.
	url := testutil.TailnetControl(t, tools, laptop, "172.30.8.2", "0.0.0.0/0,::/0")

	// The daemon and the CLI find tailscale in PATH, as on a host.
	t.Setenv("PATH", filepath.Dir(tools.Tailscale)+":"+os.Getenv("PATH"))
	hv := testutil.NewTailnetNode(t, tools, l.ns)
	hv.Port = 41641 // as Tailscale's packages start it; the uplink opens it
	file := l.writeFile(tailnetFile(hv.Socket, tailnetA, tailnetB))
	l.startDaemon(file)
	l.waitFor("a and b running", 4*time.Minute, allRunning("a", "b"))
	if !strings.Contains(l.log(), "tailscale routes") {
		t.Errorf("the daemon did not say tailscaled is missing:\n%s", l.log())
	}

	// tailscaled comes up after the daemon; nobody applies the file again.
	hv.Start(t, url, false)
	hv.Up(t, url, "hv")
	lap := testutil.StartTailnetNode(t, tools, laptop, url, false)
	lap.Up(t, url, "laptop", "--accept-routes")
	v4v6 := func(n int) []string {
		return []string{fmt.Sprintf("10.%d.0.0/24", n), fmt.Sprintf("fd6d:6963:a%02x::/64", n)}
	}
	awaitPeerRoutes(t, lap, "hv", append(v4v6(1), v4v6(2)...), l)

	// The laptop reaches the host directly, not through the relay.
	if out, err := lap.CLI("ping", "-c", "20", "--until-direct", "hv"); err != nil || !strings.Contains(out, "via 172.30.8.1:41641") {
		t.Errorf("no direct path from the laptop to the host: %v\n%s", err, out)
	}

	// SSH from the laptop, to both VMs and over both families.
	for vm, addr := range map[string]string{"a": "10.1.0.2", "b": "10.2.0.2", "a6": "fd6d:6963:a01::2"} {
		name := strings.TrimSuffix(vm, "6")
		if out := sshRun(t, l, laptop, name, addr, "hostname"); out != name+"\n" {
			t.Errorf("hostname of %s over the tailnet (%s): %q", name, addr, out)
		}
	}
	// A bulk transfer over each family: full-sized segments through the
	// tunnel's 1280-byte MTU (MSS and path MTU right), timed.
	for _, addr := range []string{"10.1.0.2", "fd6d:6963:a01::2"} {
		start := time.Now()
		const size = 8 << 20
		if n := sshBytes(t, l, laptop, "a", addr, fmt.Sprintf("head -c %d /dev/zero", size)); n != size {
			t.Errorf("bulk transfer from a (%s) over the tailnet: %d bytes, want %d", addr, n, size)
		}
		t.Logf("8 MiB from a (%s) to the laptop over SSH through the tailnet in %s", addr, time.Since(start).Round(time.Millisecond))
	}

	// The declared port answers the tailnet; another port does not (it
	// answers the host: the firewall drops it, the listener is there).
	if out, err := l.cli("exec", "a", "--", "sh", "-c", "busybox httpd -p 8080 -h /tmp && busybox httpd -p 9090 -h /tmp"); err != nil {
		t.Fatalf("listeners in a: %v\n%s", err, out)
	}
	if c, err := vmssh.DialIn(laptop.Path, "10.1.0.2:8080", 10*time.Second); err != nil {
		t.Errorf("a's declared port 8080 from the laptop: %v", err)
	} else {
		c.Close()
	}
	if c, err := vmssh.DialIn(laptop.Path, "10.1.0.2:9090", 3*time.Second); err == nil {
		c.Close()
		t.Error("a's undeclared port 9090 answers the tailnet")
	}
	if c, err := vmssh.DialIn(l.ns.Path, "10.1.0.2:9090", 3*time.Second); err != nil {
		t.Errorf("a's port 9090 from the host: %v", err)
	} else {
		c.Close()
	}

	out, _ := l.cli("verify", "-f", file)
	for _, want := range []string{"PASS  tailscale node", "PASS  tailscale routes", "PASS  tailnet → VM SSH", "answers the host's tailnet address 100."} {
		if !strings.Contains(out, want) {
			t.Errorf("verify lacks %q:\n%s", want, out)
		}
	}

	// b leaves the file and c joins it: b's routes are withdrawn, c is
	// reachable, the laptop untouched.
	os.WriteFile(file, []byte(tailnetFile(hv.Socket, tailnetA, tailnetC)), 0o644)
	if out, err := l.cli("apply", "-f", file); err != nil {
		t.Fatalf("apply with c for b: %v\n%s", err, out)
	}
	awaitPeerRoutes(t, lap, "hv", append(v4v6(1), v4v6(3)...), l)
	if out := sshRun(t, l, laptop, "c", "10.3.0.2", "hostname"); out != "c\n" {
		t.Errorf("hostname of c over the tailnet: %q", out)
	}
	if out, err := laptop.Exec("ip", "route", "get", "10.2.0.2"); err == nil && strings.Contains(out, "tailscale0") {
		t.Errorf("the laptop still routes b's address through the tailnet: %s", out)
	}
}

// awaitPeerRoutes waits until node has the routes want from its peer
// called peer.
func awaitPeerRoutes(t *testing.T, node *testutil.TailnetNode, peer string, want []string, l *daemonLab) {
	t.Helper()
	slices.Sort(want)
	deadline := time.Now().Add(time.Minute)
	for {
		got := node.Status(t).PeerRoutes(peer)
		slices.Sort(got)
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's routes on the laptop: %v, want %v\ndaemon log:\n%s", peer, got, want, tail(l.log(), 20))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// sshRun runs cmd in vm over SSH to addr from the namespace ns, with
// microvm's client key, pinning the VM's host key.
func sshRun(t *testing.T, l *daemonLab, ns *testutil.Netns, vm, addr, cmd string) string {
	t.Helper()
	c, err := vmssh.Dial(l.state, vm, addr, ns.Path, 30*time.Second)
	if err != nil {
		t.Fatalf("ssh to %s at %s from %s: %v", vm, addr, ns.Name, err)
	}
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := s.CombinedOutput(cmd)
	if err != nil {
		t.Fatalf("%s in %s: %v\n%s", cmd, vm, err, out)
	}
	return string(out)
}

// sshBytes runs cmd in vm over SSH and counts the bytes it writes.
func sshBytes(t *testing.T, l *daemonLab, ns *testutil.Netns, vm, addr, cmd string) int64 {
	t.Helper()
	c, err := vmssh.Dial(l.state, vm, addr, ns.Path, 30*time.Second)
	if err != nil {
		t.Fatalf("ssh to %s at %s: %v", vm, addr, err)
	}
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, err := s.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(cmd); err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, r)
	if err != nil {
		t.Errorf("reading %s: %v", cmd, err)
	}
	if err := s.Wait(); err != nil {
		t.Errorf("%s: %v", cmd, err)
	}
	return n
}
