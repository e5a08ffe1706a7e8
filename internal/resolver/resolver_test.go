package resolver

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"microvm.dev/microvm/internal/testutil"
)

// lab is a namespace with two gateway addresses on a bridge and
// Debian's dnsmasq as the upstream on 127.0.0.1:5354, answering
// ext.example.test and NXDOMAIN for the rest of example.test.
type lab struct {
	ns           *testutil.Netns
	stopUpstream func()
}

func newLab(t *testing.T) *lab {
	ns := testutil.NewNetns(t, "dns")
	ns.IP(t, "link", "add", "gw0", "type", "bridge")
	ns.IP(t, "addr", "add", "10.9.0.1/24", "dev", "gw0")
	ns.IP(t, "addr", "add", "10.8.0.1/24", "dev", "gw0")
	ns.IP(t, "link", "set", "gw0", "up")
	l := &lab{ns: ns}
	l.stopUpstream = testutil.DNSMasq(t, ns, "--listen-address=127.0.0.1", "--port=5354", "--local=/example.test/",
		"--host-record=ext.example.test,192.0.2.7", "--local-ttl=60")
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := l.query(t, "127.0.0.1:5354", "udp", "ext.example.test.", dns.TypeA); err == nil {
			return l
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("dnsmasq does not answer")
	return nil
}

// query asks server (in the namespace) one question.
func (l *lab) query(t *testing.T, server, proto, name string, qtype uint16) (*dns.Msg, error) {
	t.Helper()
	var c net.Conn
	var err error
	l.ns.Do(t, func() { c, err = net.DialTimeout(proto, server, time.Second) })
	if err != nil {
		return nil, err
	}
	conn := &dns.Conn{Conn: c}
	defer conn.Close()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	resp, _, err := (&dns.Client{Net: proto, Timeout: 5 * time.Second}).ExchangeWithConn(m, conn)
	return resp, err
}

func (l *lab) server(t *testing.T, timeout time.Duration) *Server {
	s, err := New(Options{Domain: "Microvm.Internal", Upstreams: []string{"127.0.0.1:5354"}, NetNS: l.ns.Path, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	vms := map[string][]netip.Addr{"a": {netip.MustParseAddr("10.9.0.2")}, "b": {netip.MustParseAddr("10.8.0.2")}}
	if err := s.Update(vms, []netip.Addr{netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("10.8.0.1")}); err != nil {
		t.Fatal(err)
	}
	return s
}

func answers(m *dns.Msg) string {
	var out []string
	for _, rr := range m.Answer {
		switch v := rr.(type) {
		case *dns.A:
			out = append(out, v.A.String())
		case *dns.PTR:
			out = append(out, v.Ptr)
		}
	}
	return strings.Join(out, " ")
}

// The VMs' names from the zone, over UDP and TCP, on every gateway.
func TestVMNames(t *testing.T) {
	l := newLab(t)
	l.server(t, time.Second)
	for _, c := range []struct {
		server, proto, name string
		qtype               uint16
		rcode               int
		want                string
	}{
		{"10.9.0.1:53", "udp", "a.microvm.internal.", dns.TypeA, dns.RcodeSuccess, "10.9.0.2"},
		{"10.9.0.1:53", "tcp", "B.MicroVM.internal.", dns.TypeA, dns.RcodeSuccess, "10.8.0.2"},
		{"10.8.0.1:53", "udp", "a.microvm.internal.", dns.TypeA, dns.RcodeSuccess, "10.9.0.2"},
		{"10.9.0.1:53", "udp", "a.microvm.internal.", dns.TypeAAAA, dns.RcodeSuccess, ""},
		{"10.9.0.1:53", "udp", "nope.microvm.internal.", dns.TypeA, dns.RcodeNameError, ""},
		{"10.9.0.1:53", "udp", "2.0.9.10.in-addr.arpa.", dns.TypePTR, dns.RcodeSuccess, "a.microvm.internal."},
	} {
		m, err := l.query(t, c.server, c.proto, c.name, c.qtype)
		if err != nil {
			t.Errorf("%s %s %s: %v", c.server, c.proto, c.name, err)
			continue
		}
		if m.Rcode != c.rcode || answers(m) != c.want || !m.Authoritative {
			t.Errorf("%s %s %s %s: %s %q (aa %v), want %s %q", c.server, c.proto, c.name, dns.TypeToString[c.qtype],
				dns.RcodeToString[m.Rcode], answers(m), m.Authoritative, dns.RcodeToString[c.rcode], c.want)
		}
		if c.want == "" && (len(m.Ns) != 1 || m.Ns[0].Header().Rrtype != dns.TypeSOA) {
			t.Errorf("%s: an empty answer without the zone's SOA: %v", c.name, m.Ns)
		}
	}
}

// Other names go to the upstream (dnsmasq) and are cached; with the
// upstream gone a cached name still answers and a new one gets SERVFAIL
// within the server's timeout, not a client's timeout.
func TestForwarding(t *testing.T) {
	l := newLab(t)
	l.server(t, time.Second)
	m, err := l.query(t, "10.9.0.1:53", "udp", "ext.example.test.", dns.TypeA)
	if err != nil || m.Rcode != dns.RcodeSuccess || answers(m) != "192.0.2.7" {
		t.Fatalf("forwarded: %v %v", m, err)
	}
	if m, err := l.query(t, "10.9.0.1:53", "tcp", "missing.example.test.", dns.TypeA); err != nil || m.Rcode != dns.RcodeNameError {
		t.Errorf("a name the upstream does not know, over TCP: %v %v", m, err)
	}
	l.stopUpstream()
	if m, err := l.query(t, "10.9.0.1:53", "udp", "EXT.example.test.", dns.TypeA); err != nil || answers(m) != "192.0.2.7" {
		t.Errorf("cached, upstream down: %v %v", m, err)
	}
	start := time.Now()
	m, err = l.query(t, "10.9.0.1:53", "udp", "other.example.test.", dns.TypeA)
	took := time.Since(start)
	if err != nil || m.Rcode != dns.RcodeServerFailure {
		t.Errorf("upstream down: %v %v", m, err)
	}
	if took > 3*time.Second {
		t.Errorf("SERVFAIL took %s with a 1 s bound", took)
	}
	t.Logf("SERVFAIL with the upstream down after %s", took.Round(time.Millisecond))
	// The zone does not depend on the upstream.
	if m, err := l.query(t, "10.9.0.1:53", "udp", "b.microvm.internal.", dns.TypeA); err != nil || answers(m) != "10.8.0.2" {
		t.Errorf("a VM name with the upstream down: %v %v", m, err)
	}
}

// Update follows the file: a VM removed is no longer a name, a gateway
// removed is no longer listened on.
func TestUpdate(t *testing.T) {
	l := newLab(t)
	s := l.server(t, time.Second)
	if err := s.Update(map[string][]netip.Addr{"a": {netip.MustParseAddr("10.9.0.2")}}, []netip.Addr{netip.MustParseAddr("10.9.0.1")}); err != nil {
		t.Fatal(err)
	}
	if m, err := l.query(t, "10.9.0.1:53", "udp", "b.microvm.internal.", dns.TypeA); err != nil || m.Rcode != dns.RcodeNameError {
		t.Errorf("a removed VM: %v %v", m, err)
	}
	if m, err := l.query(t, "10.8.0.1:53", "tcp", "a.microvm.internal.", dns.TypeA); err == nil {
		t.Errorf("a removed gateway still answers: %v", m)
	}
	if got := s.Addrs(); len(got) != 1 || got[0] != netip.MustParseAddr("10.9.0.1") {
		t.Errorf("listening on %v", got)
	}
}

func TestUpstreams(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(p, []byte("# a comment\nsearch lan\nnameserver 10.9.0.1\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\noptions edns0\nnameserver bogus\n"), 0o644)
	got, err := HostUpstreams(p, []netip.Addr{netip.MustParseAddr("10.9.0.1")})
	if err != nil || strings.Join(got, " ") != "192.0.2.53:53 [fe80::1%eth0]:53" {
		t.Errorf("HostUpstreams = %q %v", got, err)
	}
	for in, want := range map[string]string{"192.0.2.1": "192.0.2.1:53", "192.0.2.1:5353": "192.0.2.1:5353", "2001:db8::1": "[2001:db8::1]:53", "[2001:db8::1]:54": "[2001:db8::1]:54"} {
		if got, err := Upstream(in); err != nil || got != want {
			t.Errorf("Upstream(%q) = %q %v, want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"dns.example", "192.0.2.1:0", "192.0.2.1:x", ""} {
		if _, err := Upstream(bad); err == nil {
			t.Errorf("Upstream(%q): no error", bad)
		}
	}
}

// An upstream that does not answer (no host behind its address) leaves
// the next one its share of the time: the answer comes from the second.
func TestDeadUpstreamFirst(t *testing.T) {
	l := newLab(t)
	s, err := New(Options{Domain: "microvm.internal", Upstreams: []string{"10.9.0.99:53", "127.0.0.1:5354"}, NetNS: l.ns.Path, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if err := s.Update(nil, []netip.Addr{netip.MustParseAddr("10.9.0.1")}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	m, err := l.query(t, "10.9.0.1:53", "udp", "ext.example.test.", dns.TypeA)
	if err != nil || answers(m) != "192.0.2.7" {
		t.Fatalf("with the first upstream dead: %v %v", m, err)
	}
	t.Logf("answered by the second upstream after %s", time.Since(start).Round(time.Millisecond))
}

// An answer too long for UDP is cut and marked truncated for the guest,
// which then asks over TCP and gets it whole.
func TestTruncatedForUDP(t *testing.T) {
	l := newLab(t)
	s := l.server(t, time.Second)
	var addrs []netip.Addr
	for i := range 60 {
		addrs = append(addrs, netip.AddrFrom4([4]byte{10, 9, 1, byte(i)}))
	}
	s.Update(map[string][]netip.Addr{"many": addrs}, []netip.Addr{netip.MustParseAddr("10.9.0.1")})
	m, err := l.query(t, "10.9.0.1:53", "udp", "many.microvm.internal.", dns.TypeA)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Truncated || len(m.Answer) >= 60 {
		t.Errorf("over UDP: truncated %v, %d answers", m.Truncated, len(m.Answer))
	}
	if m, err = l.query(t, "10.9.0.1:53", "tcp", "many.microvm.internal.", dns.TypeA); err != nil || m.Truncated || len(m.Answer) != 60 {
		t.Errorf("over TCP: %v %v", m, err)
	}
}
