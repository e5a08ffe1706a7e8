// Command dnsbench measures the VMs' DNS server (internal/resolver) inside
// a throwaway network namespace (run as root), side by side in the same
// run with the peer a user would otherwise run for VMs (Debian's dnsmasq,
// as libvirt and Incus do), both on gateway addresses of one bridge and
// both forwarding to one upstream dnsmasq on loopback: the latency of a
// VM's name (from the zone), of an external name answered from the cache,
// and of a new external name (forwarded), sequential queries over UDP. It
// prints medians and the ratio of the two.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"time"

	"github.com/miekg/dns"

	"microvm.dev/microvm/internal/hostnet"
	"microvm.dev/microvm/internal/resolver"
	"microvm.dev/microvm/internal/testutil"
)

func main() {
	n := flag.Int("queries", 2000, "queries per measurement")
	flag.Parse()
	if err := run(*n); err != nil {
		fmt.Fprintln(os.Stderr, "dnsbench:", err)
		os.Exit(1)
	}
}

const (
	ours     = "10.9.0.1:53"
	theirs   = "10.9.0.254:53"
	upstream = "127.0.0.1:5354"
)

func run(n int) error {
	ns := fmt.Sprintf("dnsbench%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	path := "/run/netns/" + ns
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "br-bench", "type", "bridge"},
		{"addr", "add", "10.9.0.1/24", "dev", "br-bench"},
		{"addr", "add", "10.9.0.254/24", "dev", "br-bench"},
		{"link", "set", "br-bench", "up"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %v: %v: %s", args, err, out)
		}
	}
	tmp, err := os.MkdirTemp("", "dnsbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	// The upstream: every name of ext.test exists (a wildcard), so each new
	// name is a real forward.
	up, err := dnsmasq(ns, tmp, "up", "--listen-address=127.0.0.1", "--port=5354", "--address=/ext.test/192.0.2.7", "--local-ttl=300")
	if err != nil {
		return err
	}
	defer stop(up)
	// The peer: dnsmasq with the VM's name as a host record, forwarding
	// the rest to the upstream, with its cache.
	peer, err := dnsmasq(ns, tmp, "peer", "--listen-address=10.9.0.254", "--port=53", "--server=127.0.0.1#5354",
		"--host-record=vm1.microvm.internal,10.9.0.2", "--local=/microvm.internal/", "--cache-size=10000")
	if err != nil {
		return err
	}
	defer stop(peer)
	s, err := resolver.New(resolver.Options{Domain: "microvm.internal", Upstreams: []string{upstream}, NetNS: path})
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.Update(map[string][]netip.Addr{"vm1": {netip.MustParseAddr("10.9.0.2")}}, []netip.Addr{netip.MustParseAddr("10.9.0.1")}); err != nil {
		return err
	}
	for _, srv := range []string{ours, theirs} {
		if err := waitAnswer(path, srv); err != nil {
			return err
		}
	}
	fmt.Printf("%-34s %12s %12s %8s\n", "query (sequential, UDP)", "microvm", "dnsmasq", "ratio")
	for _, m := range []struct {
		what string
		name func(server, i int) string
	}{
		{"a VM's name", func(int, int) string { return "vm1.microvm.internal." }},
		{"an external name, cached", func(int, int) string { return "cached.ext.test." }},
		// A name neither server has seen: forwarded to the upstream.
		{"a new external name (forwarded)", func(server, i int) string { return fmt.Sprintf("s%d-n%d.ext.test.", server, i) }},
	} {
		var med [2]time.Duration
		for k, srv := range []string{ours, theirs} {
			d, err := measure(path, srv, n, func(i int) string { return m.name(k, i) })
			if err != nil {
				return fmt.Errorf("%s on %s: %w", m.what, srv, err)
			}
			med[k] = d
		}
		fmt.Printf("%-34s %12s %12s %7.2fx\n", m.what, med[0].Round(time.Microsecond), med[1].Round(time.Microsecond), float64(med[0])/float64(med[1]))
	}
	return nil
}

func dnsmasq(ns, dir, name string, args ...string) (*exec.Cmd, error) {
	bin, err := exec.LookPath("dnsmasq")
	if err != nil {
		return nil, fmt.Errorf("dnsmasq is not installed (apt install dnsmasq-base): %w", err)
	}
	cmd := testutil.DNSMasqCommand(bin, ns, filepath.Join(dir, name+".pid"), args...)
	return cmd, cmd.Start()
}

func stop(c *exec.Cmd) {
	c.Process.Kill()
	c.Wait()
}

// conn is a UDP socket to server made in the namespace.
func conn(path, server string) (*dns.Conn, error) {
	h, err := hostnet.Open(path)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	var c net.Conn
	if err := h.Do(func() error {
		var err error
		c, err = net.Dial("udp", server)
		return err
	}); err != nil {
		return nil, err
	}
	return &dns.Conn{Conn: c}, nil
}

func waitAnswer(path, server string) error {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := ask(path, server, "vm1.microvm.internal."); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s does not answer", server)
}

func ask(path, server, name string) (*dns.Msg, error) {
	c, err := conn(path, server)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	resp, _, err := (&dns.Client{Timeout: 2 * time.Second}).ExchangeWithConn(m, c)
	return resp, err
}

// measure sends n sequential queries over one socket and returns the
// median time to each answer (every answer must be NOERROR with an A).
func measure(path, server string, n int, name func(int) string) (time.Duration, error) {
	c, err := conn(path, server)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	client := &dns.Client{Timeout: 2 * time.Second}
	times := make([]time.Duration, 0, n)
	for i := range n {
		m := new(dns.Msg)
		m.SetQuestion(name(i), dns.TypeA)
		t := time.Now()
		resp, _, err := client.ExchangeWithConn(m, c)
		if err != nil {
			return 0, err
		}
		if resp.Rcode != dns.RcodeSuccess || len(resp.Answer) == 0 {
			return 0, fmt.Errorf("%s: %s", name(i), dns.RcodeToString[resp.Rcode])
		}
		times = append(times, time.Since(t))
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	return times[len(times)/2], nil
}
