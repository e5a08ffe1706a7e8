package network

import (
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/testutil"
)

const (
	uplink6   = "2001:db8:ff::1"
	internet6 = "2001:db8:ff::2"
)

// attachGuests6 gives each guest namespace its VM's IPv6 address, with its
// gateway as the default route, and the host and the "internet" their
// IPv6 uplink.
func (l *lab) attachGuests6(t *testing.T) {
	t.Helper()
	l.host.IP(t, "-6", "addr", "add", uplink6+"/64", "dev", "uplink0", "nodad")
	l.host.IP(t, "-6", "route", "add", "default", "via", internet6)
	l.inet.IP(t, "-6", "addr", "add", internet6+"/64", "dev", "wan0", "nodad")
	for _, vm := range l.cfg.VMs {
		g := l.vms[vm.Name]
		g.IP(t, "-6", "addr", "add", vm.Net.Address6.String()+"/64", "dev", "eth0", "nodad")
		g.IP(t, "-6", "route", "add", "default", "via", vm.Net.Gateway6.String())
	}
}

// counter reads the packets counted by the antispoof rule that mentions
// what.
func (l *lab) counter(t *testing.T, what string) int {
	t.Helper()
	out, err := l.host.Exec("nft", "list", "chain", "inet", "microvm", "antispoof")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, what) {
			if m := regexp.MustCompile(`counter packets (\d+)`).FindStringSubmatch(line); m != nil {
				n, _ := strconv.Atoi(m[1])
				return n
			}
		}
	}
	t.Fatalf("no counted rule with %q in:\n%s", what, out)
	return 0
}

// sendICMPv6 sends one ICMPv6 message from the guest namespace g out of its
// eth0 to dst, with the hop limit neighbour discovery requires (255).
func sendICMPv6(t *testing.T, g *testutil.Netns, typ ipv6.ICMPType, body []byte, dst string) {
	t.Helper()
	var err error
	g.Do(t, func() {
		var c net.PacketConn
		if c, err = net.ListenPacket("ip6:ipv6-icmp", "::"); err != nil {
			return
		}
		defer c.Close()
		p := ipv6.NewPacketConn(c)
		ifi, ierr := net.InterfaceByName("eth0")
		if ierr != nil {
			err = ierr
			return
		}
		p.SetMulticastInterface(ifi)
		p.SetMulticastHopLimit(255)
		p.SetHopLimit(255)
		msg, merr := (&icmp.Message{Type: typ, Body: &icmp.RawBody{Data: body}}).Marshal(nil)
		if merr != nil {
			err = merr
			return
		}
		_, err = p.WriteTo(msg, nil, &net.IPAddr{IP: net.ParseIP(dst), Zone: "eth0"})
	})
	if err != nil {
		t.Fatalf("send ICMPv6 %v: %v", typ, err)
	}
}

// IPv6 for every VM, with real traffic: the gateway and the internet
// through NAT66, isolation both ways with the allowed port open, the
// declared and forwarded ports, the host's services closed, and from a VM:
// a spoofed source, a router advertisement and a neighbour advertisement
// for an address not its own are dropped.
func TestIPv6(t *testing.T) {
	l := newLab(t, labConfig)
	if _, err := l.m.Apply(l.cfg); err != nil {
		t.Fatalf("apply: %v", err)
	}
	// IPv6 forwarding is on; the uplink keeps taking router advertisements.
	for sysctl, want := range map[string]string{"net.ipv6.conf.all.forwarding": "1", "net.ipv6.conf.uplink0.accept_ra": "2", "net.ipv6.conf.br-vm1.accept_ra": "0", "net.ipv6.conf.vm-vm1.disable_ipv6": "1"} {
		if out, err := l.host.Exec("sysctl", "-n", sysctl); err != nil || strings.TrimSpace(out) != want {
			t.Errorf("%s = %q (%v), want %s", sysctl, strings.TrimSpace(out), err, want)
		}
	}
	l.attachGuests(t)
	l.attachGuests6(t)
	vm1, vm2, db := l.vms["vm1"], l.vms["vm2"], l.vms["db"]
	n1, n2, ndb := l.cfg.VM("vm1").Net, l.cfg.VM("vm2").Net, l.cfg.VM("db").Net
	at := func(a net.IP, port int) string { return net.JoinHostPort(a.String(), strconv.Itoa(port)) }
	addr := func(s string, port int) string { return at(net.ParseIP(s), port) }
	l.inet.Serve(t, addr(internet6, 9000))
	vm1.Serve(t, addr("::", 8080))
	vm1.Serve(t, addr("::", 9000))
	vm2.Serve(t, addr("::", 9000))
	db.Serve(t, addr("::", 5432))
	db.Serve(t, addr("::", 5433))
	l.host.Serve(t, addr("::", 2222))

	check := func(what, src, dst, wantPeer string, want bool) {
		t.Helper()
		var g *testutil.Netns
		switch {
		case strings.HasPrefix(what, "vm1"):
			g = vm1
		case strings.HasPrefix(what, "vm2"):
			g = vm2
		case strings.HasPrefix(what, "db"):
			g = db
		case strings.HasPrefix(what, "internet"):
			g = l.inet
		default:
			g = l.host
		}
		got, err := g.Dial(t, src, dst, dialTimeout)
		switch {
		case want && err != nil:
			t.Errorf("%s: want a connection, got %v", what, err)
		case want && wantPeer != "" && got != wantPeer:
			t.Errorf("%s: the server saw %s, want %s", what, got, wantPeer)
		case !want && err == nil:
			t.Errorf("%s: connected, want it dropped", what)
		}
	}

	if !vm1.Ping(t, n1.Gateway6.String()) {
		t.Error("vm1 cannot ping its IPv6 gateway")
	}
	if vm1.Ping(t, n2.Gateway6.String()) {
		t.Error("vm1 can ping vm2's IPv6 gateway")
	}
	check("vm1 → internet over IPv6 (NAT66)", "", addr(internet6, 9000), uplink6, true)
	check("db → internet over IPv6 (NAT66)", "", addr(internet6, 9000), uplink6, true)
	check("vm1 → vm2 over IPv6", "", at(n2.Address6.AsSlice(), 9000), "", false)
	check("vm2 → vm1 over IPv6", "", at(n1.Address6.AsSlice(), 9000), "", false)
	check("vm1 → db:5432 over IPv6 (allowed)", "", at(ndb.Address6.AsSlice(), 5432), n1.Address6.String(), true)
	check("vm1 → db:5433 over IPv6 (neighbouring port)", "", at(ndb.Address6.AsSlice(), 5433), "", false)
	check("db → vm1 over IPv6 (allow is one-way)", "", at(n1.Address6.AsSlice(), 9000), "", false)
	check("vm1 → host service on its IPv6 gateway", "", at(n1.Gateway6.AsSlice(), 2222), "", false)
	check("vm1 → host service on the IPv6 uplink", "", addr(uplink6, 2222), "", false)
	check("host → vm1 over IPv6 (management access)", "", at(n1.Address6.AsSlice(), 9000), n1.Gateway6.String(), true)
	check("internet → host:8080 forwarded to vm1 over IPv6", "", addr(uplink6, 8080), internet6, true)

	// Spoofing: a second address of vm1's network is not vm1's.
	spoofed := strings.TrimSuffix(n1.Subnet6.Addr().String(), "::") + "::99"
	vm1.IP(t, "-6", "addr", "add", spoofed+"/64", "dev", "eth0", "nodad")
	before := l.counter(t, "ip6 saddr . ether saddr")
	check("vm1 with a spoofed IPv6 source", spoofed, addr(internet6, 9000), "", false)
	if l.counter(t, "ip6 saddr . ether saddr") == before {
		t.Error("the spoofed IPv6 source was not counted by the anti-spoofing rule")
	}
	vm1.IP(t, "-6", "addr", "del", spoofed+"/64", "dev", "eth0") // its own address again

	// A router advertisement from a VM (a rogue router for the host's
	// bridge) and a neighbour advertisement claiming the gateway's address.
	before = l.counter(t, "nd-router-advert")
	sendICMPv6(t, vm2, ipv6.ICMPTypeRouterAdvertisement, []byte{64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0}, "ff02::1")
	if l.counter(t, "nd-router-advert") != before+1 {
		t.Error("a router advertisement from vm2 was not dropped")
	}
	before = l.counter(t, "nd-neighbor-advert")
	gw := n2.Gateway6.As16()
	na := append([]byte{0x20, 0, 0, 0}, gw[:]...) // override flag, target: vm2's gateway
	sendICMPv6(t, vm2, ipv6.ICMPTypeNeighborAdvertisement, na, "ff02::1")
	if l.counter(t, "nd-neighbor-advert") != before+1 {
		t.Error("a neighbour advertisement for the gateway's address from vm2 was not dropped")
	}
	// vm2's own address still resolves from the host (its genuine
	// advertisements pass).
	check("host → vm2 over IPv6 after the spoofing attempts", "", at(n2.Address6.AsSlice(), 9000), n2.Gateway6.String(), true)

	// The gateway's DNS port over TCP is open to the VM (the daemon's
	// resolver listens there); AWS's IPv6 metadata address, answering
	// the host, is not reachable from a VM.
	l.host.Serve(t, at(n1.Gateway6.AsSlice(), 53))
	check("vm1 → its IPv6 gateway's DNS port over TCP", "", at(n1.Gateway6.AsSlice(), 53), n1.Address6.String(), true)
	l.inet.IP(t, "-6", "addr", "add", "fd00:ec2::254/128", "dev", "wan0", "nodad")
	l.host.IP(t, "-6", "route", "add", "fd00:ec2::254/128", "via", internet6)
	l.inet.Serve(t, addr("fd00:ec2::254", 80))
	check("host → fd00:ec2::254 (the host itself may)", "", addr("fd00:ec2::254", 80), "", true)
	check("vm1 → fd00:ec2::254 (AWS metadata over IPv6)", "", addr("fd00:ec2::254", 80), "", false)

	// An IPv6 egress deny closes exactly that destination.
	cfg, err := config.Parse("lab.yaml", []byte(labConfig+"  egress: { deny: [{ to: \""+internet6+"\", ports: [\"9000/tcp\"] }] }\n"), config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.m.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	l.inet.Serve(t, addr(internet6, 9001))
	check("vm1 → internet6:9000 (denied by network.egress)", "", addr(internet6, 9000), "", false)
	check("vm1 → internet6:9001 (not denied)", "", addr(internet6, 9001), uplink6, true)
}
