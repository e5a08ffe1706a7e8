package e2e

import (
	"strings"
	"testing"
	"time"

	"microvm.dev/microvm/internal/testutil"
)

// startUpstreamDNS starts Debian's dnsmasq in an "internet" namespace
// joined to the lab's host namespace (198.51.100.0/24): the resolver the
// VMs' DNS forwards to (host.dns), answering ext.example.test and NXDOMAIN
// for the rest of example.test. The function returned stops it.
func startUpstreamDNS(t *testing.T, host *testutil.Netns) (stop func()) {
	t.Helper()
	ns := testutil.NewNetns(t, "dnsup")
	testutil.Veth(t, host, "up0", ns, "wan0")
	host.IP(t, "addr", "add", "198.51.100.1/24", "dev", "up0")
	host.IP(t, "link", "set", "up0", "up")
	ns.IP(t, "addr", "add", "198.51.100.2/24", "dev", "wan0")
	ns.IP(t, "link", "set", "wan0", "up")
	return testutil.DNSMasq(t, ns, "--listen-address=198.51.100.2", "--local=/example.test/",
		"--host-record=ext.example.test,192.0.2.7", "--local-ttl=60")
}

// The VMs' DNS and IPv6, from inside real guests: the resolver is the gateway
// (resolv.conf, with the VMs' domain to search); a VM's own name, another
// VM's bare name and an external name (the upstream's) resolve; with the
// upstream stopped, a new external name fails at once (SERVFAIL, not a
// timeout) while the VMs' names still resolve; verify says so per VM.
func TestVMDNS(t *testing.T) {
	requireGuestEnv(t)
	l := newDaemonLab(t, "dns")
	stopUpstream := startUpstreamDNS(t, l.ns)
	file := l.writeFile(`host: { dns: [198.51.100.2] }
network: { domain: lab.test }
defaults: { memory: 256M, stopTimeout: 20s }
vms:
  a: { index: 1 }
  b: { index: 2 }
`)
	l.startDaemon(file)
	l.waitFor("a and b running", 4*time.Minute, allRunning("a", "b"))

	if out, err := l.cli("exec", "a", "--", "cat", "/etc/resolv.conf"); err != nil || out != "nameserver 10.1.0.1\nsearch lab.test\n" {
		t.Errorf("a's resolv.conf: %v %q", err, out)
	}
	lookup := func(vm string, names ...string) map[string]string {
		t.Helper()
		argv := []string{"exec", vm, "--", "/run/microvm/init", "probe"}
		for _, n := range names {
			argv = append(argv, "dns", n+"="+n)
		}
		out, err := l.cli(argv...)
		if err != nil {
			t.Fatalf("probe in %s: %v\n%s", vm, err, out)
		}
		got := map[string]string{}
		for _, line := range strings.Split(out, "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				got[k] = v
			}
		}
		return got
	}
	got := lookup("a", "a.lab.test", "b", "B.Lab.Test", "ext.example.test", "nope.example.test")
	// The VMs' names have both their addresses (the ULA scheme: the IPv4
	// network after fd6d:6963).
	for name, want := range map[string]string{"a.lab.test": "10.1.0.2,fd6d:6963:a01::2", "b": "10.2.0.2,fd6d:6963:a02::2", "B.Lab.Test": "10.2.0.2,fd6d:6963:a02::2", "ext.example.test": "192.0.2.7"} {
		if got[name] != want {
			t.Errorf("in a, %s resolves to %q, want %s", name, got[name], want)
		}
	}
	for _, name := range []string{"nope.example.test"} {
		if !strings.Contains(got[name], "no such host") {
			t.Errorf("in a, %s: %q, want no such host", name, got[name])
		}
	}

	stopUpstream()
	start := time.Now()
	got = lookup("b", "gone.example.test", "a")
	took := time.Since(start)
	if g := got["gone.example.test"]; !strings.HasPrefix(g, "failed:") || strings.Contains(g, "timeout") {
		t.Errorf("with the upstream down, gone.example.test: %q, want a failure that is not a timeout", g)
	}
	if got["a"] != "10.1.0.2,fd6d:6963:a01::2" {
		t.Errorf("with the upstream down, a: %q", got["a"])
	}
	t.Logf("with the upstream down, a lookup failed after %s (exec over SSH included): %s", took.Round(time.Millisecond), got["gone.example.test"])

	// Dual-stack in the guest: microvm-init gave it its IPv6 address and
	// route; its gateway answers over IPv6, the other VM does not.
	if out, err := l.cli("exec", "a", "--", "/run/microvm/init", "probe", "ping", "gw6=fd6d:6963:a01::1", "tcp", "b6=[fd6d:6963:a02::2]:22", "tcp", "b4=10.2.0.2:22"); err != nil ||
		!strings.Contains(out, "gw6=ok\n") || !strings.Contains(out, "b6=blocked\n") || !strings.Contains(out, "b4=blocked\n") {
		t.Errorf("IPv6 from a: %v\n%s", err, out)
	}
	if out, err := l.cli("exec", "a", "--", "cat", "/etc/hosts"); err != nil || !strings.Contains(out, "fd6d:6963:a01::2\ta\n") {
		t.Errorf("a's /etc/hosts: %v %q", err, out)
	}

	out, _ := l.cli("verify", "-f", file)
	for _, want := range []string{"a.lab.test is 10.1.0.2,fd6d:6963:a01::2, b is 10.2.0.2,fd6d:6963:a02::2", "a is 10.1.0.2,fd6d:6963:a01::2, b.lab.test is 10.2.0.2,fd6d:6963:a02::2",
		"reaches fd6d:6963:a01::1", "cannot reach the 1 other VMs, over IPv4 or IPv6"} {
		if !strings.Contains(out, want) {
			t.Errorf("verify lacks %q:\n%s", want, out)
		}
	}
}
