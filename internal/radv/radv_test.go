package radv

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mdlayher/ndp"

	"microvm.dev/microvm/internal/testutil"
)

// A "host" namespace with a VM bridge (IPv6 on, its gateway address) and a
// "guest" namespace on it, as the network makes them.
func lab(t *testing.T) (host, guest *testutil.Netns) {
	host, guest = testutil.NewNetns(t, "rah"), testutil.NewNetns(t, "rag")
	host.IP(t, "link", "add", "br-a", "type", "bridge")
	testutil.Veth(t, host, "p-a", guest, "eth0")
	host.IP(t, "link", "set", "p-a", "master", "br-a")
	host.IP(t, "-6", "addr", "add", "fd6d:6963:a01::1/64", "dev", "br-a", "nodad")
	for _, l := range []string{"br-a", "p-a"} {
		host.IP(t, "link", "set", l, "up")
	}
	guest.IP(t, "link", "set", "eth0", "up")
	return host, guest
}

// listen opens an NDP connection on the guest's eth0 (its link-local
// address may still be coming up).
func listen(t *testing.T, guest *testutil.Netns) *ndp.Conn {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var c *ndp.Conn
		var err error
		guest.Do(t, func() {
			var ifi *net.Interface
			if ifi, err = net.InterfaceByName("eth0"); err == nil {
				c, _, err = ndp.Listen(ifi, ndp.LinkLocal)
			}
		})
		if err == nil {
			t.Cleanup(func() { c.Close() })
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("listen in the guest: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// nextRA waits for a router advertisement.
func nextRA(t *testing.T, c *ndp.Conn, within time.Duration) *ndp.RouterAdvertisement {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(within))
	for {
		m, _, _, err := c.ReadFrom()
		if err != nil {
			t.Fatalf("no router advertisement within %s: %v", within, err)
		}
		if ra, ok := m.(*ndp.RouterAdvertisement); ok {
			return ra
		}
	}
}

// The VM's network is announced on its bridge: the gateway as the router,
// its /64 on-link without autoconfiguration, the gateway as DNS server with
// the domain, the bridge's MAC; a router solicitation is answered at once;
// a network that goes away is withdrawn with a lifetime of 0.
func TestAdvertisements(t *testing.T) {
	host, guest := lab(t)
	a, err := New(host.Path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	c := listen(t, guest)
	n := Network{Bridge: "br-a", Prefix: netip.MustParsePrefix("fd6d:6963:a01::/64"), Gateway: netip.MustParseAddr("fd6d:6963:a01::1"), Domain: "microvm.internal"}
	a.Update([]Network{n})
	ra := nextRA(t, c, 15*time.Second)
	if ra.RouterLifetime != lifetime || ra.ManagedConfiguration || ra.CurrentHopLimit != 64 {
		t.Errorf("advertisement %+v", ra)
	}
	var prefix, dns, search, lla bool
	for _, o := range ra.Options {
		switch o := o.(type) {
		case *ndp.PrefixInformation:
			prefix = o.Prefix == n.Prefix.Addr() && o.PrefixLength == 64 && o.OnLink && !o.AutonomousAddressConfiguration
		case *ndp.RecursiveDNSServer:
			dns = len(o.Servers) == 1 && o.Servers[0] == n.Gateway
		case *ndp.DNSSearchList:
			search = len(o.DomainNames) == 1 && o.DomainNames[0] == "microvm.internal"
		case *ndp.LinkLayerAddress:
			lla = o.Direction == ndp.Source && len(o.Addr) == 6
		}
	}
	if !prefix || !dns || !search || !lla {
		t.Errorf("options: prefix %v, DNS %v, search %v, source MAC %v: %+v", prefix, dns, search, lla, ra.Options)
	}

	// A solicitation is answered well before the next periodic one.
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	guest.Do(t, func() { err = c.WriteTo(&ndp.RouterSolicitation{}, nil, netip.IPv6LinkLocalAllRouters()) })
	if err != nil {
		t.Fatal(err)
	}
	nextRA(t, c, Interval/2)
	t.Logf("a solicitation was answered after %s", time.Since(start).Round(time.Millisecond))

	a.Update(nil)
	if ra := nextRA(t, c, 5*time.Second); ra.RouterLifetime != 0 {
		t.Errorf("the withdrawal has router lifetime %s", ra.RouterLifetime)
	}

	// A daemon that stops (Close) leaves its VMs their router: no
	// withdrawal.
	b, err := New(host.Path, nil)
	if err != nil {
		t.Fatal(err)
	}
	b.Update([]Network{n})
	nextRA(t, c, 5*time.Second)
	b.Close()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		m, _, _, err := c.ReadFrom()
		if err != nil {
			break // nothing more: as it should be
		}
		if ra, ok := m.(*ndp.RouterAdvertisement); ok && ra.RouterLifetime == 0 {
			t.Error("Close withdrew the router")
		}
	}
}
