// Package radv announces each VM's IPv6 network on its bridge with router
// advertisements (RFC 4861), for images that run their own network stack
// (init: image) and expect to learn their default router, on-link prefix
// and DNS from the network: the gateway is the router, the VM's /64 is
// on-link, the gateway is the DNS server (RFC 8106) with the VMs' domain to
// search. Addresses are not autoconfigured (the A flag is off): a VM's
// address is its ::2, which microvm-init sets and the firewall admits.
//
// Neighbor Discovery is github.com/mdlayher/ndp (docs/libraries.md).
package radv

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/mdlayher/ndp"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/hostnet"
)

// Interval is how often each network is announced unsolicited (a router
// solicitation is answered at once).
const Interval = 10 * time.Second

// lifetime is how long the router, prefix and DNS are valid without a new
// announcement: long enough to survive a daemon restart.
const lifetime = 30 * time.Minute

// Network is one VM's IPv6 network as announced on its bridge.
type Network struct {
	Bridge  string
	Prefix  netip.Prefix // the VM's /64
	Gateway netip.Addr   // the router and DNS server
	Domain  string       // searched ("" for none)
}

// Networks are the networks of cfg's VMs with IPv6.
func Networks(cfg *config.Config) []Network {
	var out []Network
	for _, vm := range cfg.VMs {
		if vm.Net.HasIPv6() {
			out = append(out, Network{Bridge: vm.Net.Bridge, Prefix: vm.Net.Subnet6, Gateway: vm.Net.Gateway6, Domain: vm.Net.Domain})
		}
	}
	return out
}

// Advertiser announces networks in one network namespace.
type Advertiser struct {
	host *hostnet.Host
	log  *slog.Logger

	mu   sync.Mutex
	runs map[string]*run // by bridge
}

type run struct {
	n        Network
	stop     chan struct{}
	done     chan struct{}
	withdraw bool // on stop, announce lifetime 0
}

// New returns an Advertiser for the namespace at netns ("" for the
// process's own); it announces nothing until Update.
func New(netns string, log *slog.Logger) (*Advertiser, error) {
	h, err := hostnet.Open(netns)
	if err != nil {
		return nil, fmt.Errorf("router advertisements: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Advertiser{host: h, log: log, runs: map[string]*run{}}, nil
}

// Update announces exactly networks: new ones start, changed ones start
// again, removed ones stop (a last announcement with lifetime 0 tells
// their VM the router is gone).
func (a *Advertiser) Update(networks []Network) {
	want := map[string]Network{}
	for _, n := range networks {
		want[n.Bridge] = n
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for br, r := range a.runs {
		if n, ok := want[br]; !ok || n != r.n {
			r.end(true)
			delete(a.runs, br)
		}
	}
	for br, n := range want {
		if a.runs[br] == nil {
			r := &run{n: n, stop: make(chan struct{}), done: make(chan struct{})}
			a.runs[br] = r
			go a.announce(r)
		}
	}
}

// Close stops announcing without withdrawing anything: the VMs run on
// (a daemon that stops leaves them), and what was announced stays valid
// for its lifetime, longer than a restart takes.
func (a *Advertiser) Close() {
	a.mu.Lock()
	for br, r := range a.runs {
		r.end(false)
		delete(a.runs, br)
	}
	a.mu.Unlock()
	a.host.Close()
}

func (r *run) end(withdraw bool) {
	r.withdraw = withdraw
	close(r.stop)
	<-r.done
}

// announce sends the network's advertisement every Interval and in answer
// to a router solicitation, until stopped. The bridge's link-local address
// (the advertisement's source) may still be coming up: it retries.
func (a *Advertiser) announce(r *run) {
	defer close(r.done)
	var c *ndp.Conn
	var mac net.HardwareAddr
	for c == nil {
		var err error
		if c, mac, err = a.listen(r.n.Bridge); err != nil {
			a.log.Debug("router advertisements: waiting for the bridge", "bridge", r.n.Bridge, "err", err)
			select {
			case <-r.stop:
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
	defer c.Close()
	solicited := make(chan struct{}, 1)
	go func() {
		for {
			m, _, _, err := c.ReadFrom()
			if err != nil {
				return // closed
			}
			if _, ok := m.(*ndp.RouterSolicitation); ok {
				select {
				case solicited <- struct{}{}:
				default:
				}
			}
		}
	}()
	tick := time.NewTicker(Interval)
	defer tick.Stop()
	// Sent from the namespace: the destination's zone (the bridge) is
	// resolved there.
	send := func(ra *ndp.RouterAdvertisement) error {
		return a.host.Do(func() error { return c.WriteTo(ra, nil, netip.IPv6LinkLocalAllNodes()) })
	}
	for {
		if err := send(advertisement(r.n, mac, lifetime)); err != nil {
			a.log.Warn("router advertisement", "bridge", r.n.Bridge, "err", err)
		}
		select {
		case <-r.stop:
			if r.withdraw {
				send(advertisement(r.n, mac, 0))
			}
			return
		case <-tick.C:
		case <-solicited:
		}
	}
}

// listen opens an NDP connection on the bridge, in the namespace, from its
// link-local address, receiving the router solicitations sent to all
// routers; it also returns the bridge's MAC.
func (a *Advertiser) listen(bridge string) (*ndp.Conn, net.HardwareAddr, error) {
	var c *ndp.Conn
	var mac net.HardwareAddr
	err := a.host.Do(func() error {
		ifi, err := net.InterfaceByName(bridge)
		if err != nil {
			return err
		}
		mac = ifi.HardwareAddr
		if c, _, err = ndp.Listen(ifi, ndp.LinkLocal); err != nil {
			return err
		}
		if err := c.JoinGroup(netip.IPv6LinkLocalAllRouters()); err != nil {
			c.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return nil, nil, errors.Join(fmt.Errorf("listen on %s", bridge), err)
	}
	return c, mac, nil
}

// advertisement is n's router advertisement from the bridge's MAC, valid
// for lifetime (0: the router and what it announced are gone).
func advertisement(n Network, mac net.HardwareAddr, lifetime time.Duration) *ndp.RouterAdvertisement {
	ra := &ndp.RouterAdvertisement{
		CurrentHopLimit: 64,
		RouterLifetime:  lifetime,
		Options: []ndp.Option{
			&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac},
			&ndp.PrefixInformation{PrefixLength: uint8(n.Prefix.Bits()), OnLink: true, ValidLifetime: lifetime, PreferredLifetime: lifetime, Prefix: n.Prefix.Addr()},
			&ndp.RecursiveDNSServer{Lifetime: lifetime, Servers: []netip.Addr{n.Gateway}},
		},
	}
	if n.Domain != "" {
		ra.Options = append(ra.Options, &ndp.DNSSearchList{Lifetime: lifetime, DomainNames: []string{n.Domain}})
	}
	return ra
}
