// Package resolver is the DNS server the daemon runs for its VMs, on every
// VM's gateway address (UDP and TCP port 53, in the host's network
// namespace): it answers <vm>.<domain> with the VM's address (and the
// reverse names of those addresses), forwards every other question to the
// host's own resolvers with a cache, and answers SERVFAIL within a bound
// when they do not answer, rather than leaving a guest waiting.
//
// The DNS protocol is github.com/miekg/dns (docs/libraries.md); this
// package holds the zone, the forwarding policy and the listeners.
package resolver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"microvm.dev/microvm/internal/hostnet"
)

// TTL is how long guests may keep a VM's address (short: a changed file
// moves VMs).
const TTL = 5

// Options configure a Server.
type Options struct {
	// Domain is the VMs' domain ("microvm.internal"): <vm>.<domain>.
	Domain string
	// Upstreams are the resolvers other names go to, host:port, tried in
	// order (none: every other name is SERVFAIL).
	Upstreams []string
	// NetNS is the network namespace the server listens and forwards in
	// ("" for the process's own).
	NetNS string
	// Timeout bounds one question to the upstreams in all (default 2 s):
	// past it the guest gets SERVFAIL.
	Timeout time.Duration
	// Log receives listener errors (nil: discarded).
	Log *slog.Logger
}

// Server answers the VMs' questions. Its zone and listeners follow Update.
type Server struct {
	opts  Options
	host  *hostnet.Host
	cache *cache

	poolMu sync.Mutex
	pool   map[string][]*dns.Conn // idle UDP sockets by upstream

	mu        sync.RWMutex
	names     map[string][]netip.Addr // lower-case FQDN: addresses
	reverse   map[string]string       // reverse FQDN: the VM's FQDN
	listeners map[netip.Addr]*listener
}

type listener struct {
	udp, tcp *dns.Server
}

// New makes a server; it listens once Update names the gateways.
func New(opts Options) (*Server, error) {
	if opts.Timeout == 0 {
		opts.Timeout = 2 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	opts.Domain = dnsName(opts.Domain)
	if _, ok := dns.IsDomainName(opts.Domain); !ok || opts.Domain == "." {
		return nil, fmt.Errorf("resolver: %q is not a domain name", opts.Domain)
	}
	h, err := hostnet.Open(opts.NetNS)
	if err != nil {
		return nil, fmt.Errorf("resolver: %w", err)
	}
	return &Server{opts: opts, host: h, cache: newCache(4096), pool: map[string][]*dns.Conn{}, names: map[string][]netip.Addr{},
		reverse: map[string]string{}, listeners: map[netip.Addr]*listener{}}, nil
}

// dnsName is a domain as the server keeps it: lower case, fully qualified.
func dnsName(d string) string { return dns.Fqdn(strings.ToLower(d)) }

// Update makes the zone the VMs' addresses (by VM name) and the server
// listen on exactly the gateways given, starting and stopping listeners
// as they come and go. A gateway it cannot listen on is reported in the
// error; the others still serve.
func (s *Server) Update(vms map[string][]netip.Addr, gateways []netip.Addr) error {
	names, reverse := map[string][]netip.Addr{}, map[string]string{}
	for vm, addrs := range vms {
		fqdn := strings.ToLower(vm) + "." + s.opts.Domain
		names[fqdn] = addrs
		for _, a := range addrs {
			if r, err := dns.ReverseAddr(a.String()); err == nil {
				reverse[r] = fqdn
			}
		}
	}
	s.mu.Lock()
	s.names, s.reverse = names, reverse
	var stop []*listener
	want := map[netip.Addr]bool{}
	for _, gw := range gateways {
		want[gw] = true
	}
	for gw, l := range s.listeners {
		if !want[gw] {
			stop = append(stop, l)
			delete(s.listeners, gw)
		}
	}
	var errs []error
	for _, gw := range gateways {
		if s.listeners[gw] != nil {
			continue
		}
		l, err := s.listen(gw)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.listeners[gw] = l
	}
	s.mu.Unlock()
	for _, l := range stop {
		l.shutdown()
	}
	return errors.Join(errs...)
}

// Close stops every listener.
func (s *Server) Close() {
	s.mu.Lock()
	ls := s.listeners
	s.listeners = map[netip.Addr]*listener{}
	s.mu.Unlock()
	for _, l := range ls {
		l.shutdown()
	}
	s.poolMu.Lock()
	for _, list := range s.pool {
		for _, c := range list {
			c.Close()
		}
	}
	s.pool = map[string][]*dns.Conn{}
	s.poolMu.Unlock()
	s.host.Close()
}

// Addrs are the addresses the server listens on.
func (s *Server) Addrs() []netip.Addr {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]netip.Addr, 0, len(s.listeners))
	for a := range s.listeners {
		out = append(out, a)
	}
	return out
}

// listen opens UDP and TCP port 53 on gw in the server's namespace. The
// sockets are bound with IP_FREEBIND: a gateway being configured is
// listened on before its address is up.
func (s *Server) listen(gw netip.Addr) (*listener, error) {
	addr := net.JoinHostPort(gw.String(), "53")
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			level, opt := unix.IPPROTO_IP, unix.IP_FREEBIND
			if gw.Is6() {
				level, opt = unix.IPPROTO_IPV6, unix.IPV6_FREEBIND
			}
			serr = unix.SetsockoptInt(int(fd), level, opt, 1)
		})
		return errors.Join(err, serr)
	}}
	var pc net.PacketConn
	var tl net.Listener
	err := s.host.Do(func() error {
		var err error
		if pc, err = lc.ListenPacket(context.Background(), "udp", addr); err != nil {
			return err
		}
		if tl, err = lc.Listen(context.Background(), "tcp", addr); err != nil {
			pc.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("resolver: listen on %s: %w", addr, err)
	}
	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	l := &listener{udp: &dns.Server{PacketConn: pc, Handler: s, NotifyStartedFunc: notify},
		tcp: &dns.Server{Listener: tl, Handler: s, NotifyStartedFunc: notify}}
	for _, srv := range []*dns.Server{l.udp, l.tcp} {
		go func() {
			if err := srv.ActivateAndServe(); err != nil {
				s.opts.Log.Warn("DNS listener ended", "addr", addr, "err", err)
			}
		}()
	}
	// Serving before it is returned: a shutdown right after then stops it.
	<-started
	<-started
	return l, nil
}

func (l *listener) shutdown() {
	l.udp.Shutdown()
	l.tcp.Shutdown()
}

// ServeDNS answers one question: from the zone for the VMs' names and
// addresses, else from the cache or the upstreams.
func (s *Server) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	if len(r.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeFormatError)
		w.WriteMsg(m)
		return
	}
	network := w.RemoteAddr().Network()
	m := s.local(r)
	if m == nil {
		m = s.forward(r, network)
	}
	if network == "udp" {
		// What the guest can take over UDP (512 bytes, or its EDNS size):
		// a longer answer is cut and marked truncated, so it asks over TCP.
		size := dns.MinMsgSize
		if o := r.IsEdns0(); o != nil {
			size = max(size, int(o.UDPSize()))
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

// local answers r from the zone, or returns nil for a name outside it.
func (s *Server) local(r *dns.Msg) *dns.Msg {
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	s.mu.RLock()
	addrs, known := s.names[name]
	vm, isReverse := s.reverse[name]
	s.mu.RUnlock()
	inZone := name == s.opts.Domain || strings.HasSuffix(name, "."+s.opts.Domain)
	if !inZone && !isReverse {
		return nil
	}
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative, m.RecursionAvailable = true, true
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: TTL}
	}
	switch {
	case name == s.opts.Domain && q.Qtype == dns.TypeSOA:
		m.Answer = append(m.Answer, s.soa())
	case isReverse && q.Qtype == dns.TypePTR:
		m.Answer = append(m.Answer, &dns.PTR{Hdr: hdr(dns.TypePTR), Ptr: vm})
	case known && q.Qtype == dns.TypeA:
		for _, a := range addrs {
			if a.Is4() {
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: a.AsSlice()})
			}
		}
	case known && q.Qtype == dns.TypeAAAA:
		for _, a := range addrs {
			if a.Is6() {
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: a.AsSlice()})
			}
		}
	case !known && !isReverse && name != s.opts.Domain:
		m.Rcode = dns.RcodeNameError
	}
	if len(m.Answer) == 0 {
		m.Ns = []dns.RR{s.soa()}
	}
	return m
}

// soa is the zone's SOA, given with empty answers so that resolvers cache
// them only briefly.
func (s *Server) soa() dns.RR {
	return &dns.SOA{Hdr: dns.RR_Header{Name: s.opts.Domain, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: TTL},
		Ns: "ns." + s.opts.Domain, Mbox: "hostmaster." + s.opts.Domain, Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: TTL}
}

// forward answers r from the cache or the upstreams, in order, within the
// timeout in all (each upstream its share of what is left); SERVFAIL when
// none answers. A truncated UDP answer is
// asked again over TCP; a guest asking over TCP is forwarded over TCP.
func (s *Server) forward(r *dns.Msg, network string) *dns.Msg {
	key := cacheKey(r)
	if m := s.cache.get(key, time.Now()); m != nil {
		m.Id = r.Id
		return m
	}
	deadline := time.Now().Add(s.opts.Timeout)
	q := r.Copy()
	q.RecursionDesired = true
	for i, up := range s.opts.Upstreams {
		// An upstream that does not answer leaves the next ones their share.
		share := time.Until(deadline) / time.Duration(len(s.opts.Upstreams)-i)
		end := time.Now().Add(share)
		for _, proto := range protos(network) {
			left := time.Until(end)
			if left <= 0 {
				break
			}
			resp, err := s.exchange(q, up, proto, left)
			if err != nil {
				s.opts.Log.Debug("DNS upstream failed", "upstream", up, "proto", proto, "err", err)
				break // the next upstream
			}
			if resp.Truncated && proto == "udp" {
				continue // again over TCP
			}
			if resp.Rcode == dns.RcodeServerFailure || resp.Rcode == dns.RcodeRefused {
				break
			}
			s.cache.put(key, resp, time.Now())
			resp.Id = r.Id
			return resp
		}
	}
	m := new(dns.Msg)
	m.SetRcode(r, dns.RcodeServerFailure)
	m.RecursionAvailable = true
	return m
}

func protos(network string) []string {
	if network == "tcp" {
		return []string{"tcp"}
	}
	return []string{"udp", "tcp"}
}

// exchange asks upstream once over proto, the socket made in the server's
// namespace. UDP sockets are kept for the next question (a few per
// upstream); one that failed is closed.
func (s *Server) exchange(q *dns.Msg, upstream, proto string, timeout time.Duration) (*dns.Msg, error) {
	conn := s.idle(upstream, proto)
	if conn == nil {
		var c net.Conn
		err := s.host.Do(func() error {
			var err error
			c, err = net.DialTimeout(proto, upstream, timeout)
			return err
		})
		if err != nil {
			return nil, err
		}
		conn = &dns.Conn{Conn: c}
	}
	client := &dns.Client{Net: proto, Timeout: timeout}
	resp, _, err := client.ExchangeWithConn(q, conn)
	if err != nil || proto != "udp" || !s.keep(upstream, conn) {
		conn.Close()
	}
	return resp, err
}

// idleConns is how many UDP sockets per upstream are kept.
const idleConns = 8

// idle returns a kept UDP socket to upstream, or nil.
func (s *Server) idle(upstream, proto string) *dns.Conn {
	if proto != "udp" {
		return nil
	}
	s.poolMu.Lock()
	defer s.poolMu.Unlock()
	list := s.pool[upstream]
	if len(list) == 0 {
		return nil
	}
	c := list[len(list)-1]
	s.pool[upstream] = list[:len(list)-1]
	return c
}

// keep keeps c for the next question to upstream, unless enough are kept.
func (s *Server) keep(upstream string, c *dns.Conn) bool {
	s.poolMu.Lock()
	defer s.poolMu.Unlock()
	if len(s.pool[upstream]) >= idleConns {
		return false
	}
	s.pool[upstream] = append(s.pool[upstream], c)
	return true
}
