// Command tailnet-control runs a whole tailnet's coordination for tests on
// one address: Tailscale's own control server (tstest/integration/testcontrol,
// the one Tailscale's integration tests run real tailscaled against) and a
// DERP relay, with no STUN and nothing reached beyond that address. It
// approves advertised subnet routes as a tailnet policy's autoApprovers
// would: a route inside one of the -approve prefixes is approved as soon as
// a node advertises it, and withdrawn when the node stops advertising it.
//
// It prints "control URL" on its standard output once it serves.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"tailscale.com/derp/derpserver"
	"tailscale.com/tailcfg"
	"tailscale.com/tstest/integration/testcontrol"
	"tailscale.com/types/key"
	"tailscale.com/types/logger"
)

func main() {
	listen := flag.String("listen", "127.0.0.1", "the address (no port) the control server and DERP serve on")
	approve := flag.String("approve", "0.0.0.0/0,::/0", "comma-separated prefixes inside which advertised routes are approved (\"\" approves none)")
	verbose := flag.Bool("v", false, "log the control server's work")
	flag.Parse()
	if err := run(*listen, *approve, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "tailnet-control:", err)
		os.Exit(1)
	}
}

func run(addr, approve string, verbose bool) error {
	var allowed []netip.Prefix
	for _, s := range strings.Split(approve, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("-approve: %w", err)
		}
		allowed = append(allowed, p)
	}
	logf := logger.Discard
	if verbose {
		logf = log.Printf
	}

	derpMap, stopDERP, err := serveDERP(addr, logf)
	if err != nil {
		return err
	}
	defer stopDERP()

	ln, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		return fmt.Errorf("control listener: %w", err)
	}
	control := &testcontrol.Server{
		DERPMap:          derpMap,
		AllNodesSameUser: true,
		Logf:             logf,
		ExplicitBaseURL:  "http://" + ln.Addr().String(),
	}
	srv := &http.Server{Handler: control}
	go srv.Serve(ln)
	defer srv.Close()
	go approveRoutes(control, allowed)

	fmt.Printf("control %s\n", control.BaseURL())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	return nil
}

// serveDERP runs a DERP relay over TLS (a self-signed certificate the
// clients are told not to verify) on addr and returns the map naming it.
func serveDERP(addr string, logf logger.Logf) (*tailcfg.DERPMap, func(), error) {
	d := derpserver.New(key.NewNode(), logf)
	ln, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		return nil, nil, fmt.Errorf("DERP listener: %w", err)
	}
	hs := httptest.NewUnstartedServer(derpserver.Handler(d))
	hs.Listener.Close()
	hs.Listener = ln
	hs.Config.ErrorLog = logger.StdLogger(logf)
	hs.Config.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	hs.StartTLS()
	m := &tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{1: {
		RegionID:   1,
		RegionCode: "test",
		Nodes: []*tailcfg.DERPNode{{
			Name:             "t1",
			RegionID:         1,
			HostName:         addr,
			IPv4:             addr,
			IPv6:             "none",
			STUNPort:         -1,
			DERPPort:         ln.Addr().(*net.TCPAddr).Port,
			InsecureForTests: true,
		}},
	}}}
	return m, func() { hs.Close(); d.Close() }, nil
}

// approveRoutes keeps every node's approved routes equal to those it
// advertises that lie inside allowed, as autoApprovers do.
func approveRoutes(s *testcontrol.Server, allowed []netip.Prefix) {
	approved := map[key.NodePublic][]netip.Prefix{}
	for range time.Tick(200 * time.Millisecond) {
		for _, n := range s.AllNodes() {
			var want []netip.Prefix
			if n.Hostinfo.Valid() {
				for _, r := range n.Hostinfo.RoutableIPs().All() {
					if inside(r, allowed) {
						want = append(want, r)
					}
				}
			}
			if have, ok := approved[n.Key]; ok && slices.Equal(have, want) {
				continue
			}
			approved[n.Key] = want
			s.SetSubnetRoutes(n.Key, want)
		}
	}
}

func inside(r netip.Prefix, allowed []netip.Prefix) bool {
	for _, a := range allowed {
		if a.Bits() <= r.Bits() && a.Contains(r.Addr()) {
			return true
		}
	}
	return false
}
