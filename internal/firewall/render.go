// Package firewall renders microvm's nftables ruleset from a config: one
// table, "inet microvm", that isolates the VMs from each other and from the
// host, masquerades their traffic out of the uplink, admits the allowed
// VM-to-VM flows, the host port forwards and the VMs' service ports, and drops
// spoofed source addresses. Per-VM facts live in sets, so the number of rules
// does not grow with the number of VMs.
package firewall

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"microvm.dev/microvm/internal/config"
)

// Family and Name identify the one table microvm owns.
const (
	Family = "inet"
	Name   = "microvm"
	// MarkerPrefix starts the name of the empty chain that carries the hash.
	MarkerPrefix = "ruleset_"
	// ServiceMark is the packet mark bit on a VM's packet to a Kubernetes
	// Service range (host.serviceCIDRs), set before kube-proxy's DNAT and
	// read by the forward chain; kube-proxy's own bits are 0x4000 and
	// 0x8000, Tailscale's 0xff0000.
	ServiceMark = "0x01000000"
)

// Options are the host facts the ruleset depends on.
type Options struct {
	// Uplink is the resolved NAT uplink interface; empty renders no masquerade.
	Uplink string
}

// Ruleset is a rendered table.
type Ruleset struct {
	// Body is the table definition, as `nft list table` would show its shape.
	Body string
	// Hash is a digest of Body, carried in the table's comment so a later
	// apply can tell whether the loaded table is already this one.
	Hash string
}

// Script is the nft input that replaces the table atomically: nft applies a
// file as one transaction, so the old table is never half-replaced.
func (r Ruleset) Script() string {
	return fmt.Sprintf("table %s %s\ndelete table %s %s\n%s", Family, Name, Family, Name, r.Body)
}

// writeFunc writes one line of the ruleset.
type writeFunc func(format string, args ...any)

// Render builds the ruleset for cfg: the table's sets (the VMs' facts,
// the Service ranges, egress), then its chains by where they hook:
// prerouting (anti-spoofing, the Service mark), NAT (port forwards,
// masquerade), forwarding (VM to VM, into VMs, egress) and input (VMs to
// the host, the uplink's allowed ports).
func Render(cfg *config.Config, opts Options) Ruleset {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }

	w("table %s %s {", Family, Name)
	w("\tcomment %q", "managed by microvm: replaced whole on every apply; ruleset @HASH@")
	// An empty chain named after the hash lets an apply read back, over
	// netlink, which ruleset is loaded.
	w("\tchain %s@HASH@ {", MarkerPrefix)
	w("\t}")
	sets := vmSets(cfg)
	sets = append(sets, serviceSets(cfg)...)
	sets = append(sets, egressSets(cfg)...)
	for _, st := range sets {
		st.write(w)
	}
	preroutingChains(w)
	natChains(w, cfg, opts)
	forwardChains(w, cfg)
	inputChains(w, cfg, opts)
	w("}")

	body := b.String()
	sum := sha256.Sum256([]byte(body))
	hash := hex.EncodeToString(sum[:])[:16]
	return Ruleset{Body: strings.ReplaceAll(body, "@HASH@", hash), Hash: hash}
}

// vmSets are the sets of the VMs' facts: their bridges, subnets,
// addresses, sources (bridge, address, MAC), gateways, declared ports
// and allowed pairs, for IPv4 and, for the VMs with it, IPv6 (with what
// IPv6 needs besides: MACs, neighbour advertisement targets, NAT66
// networks).
func vmSets(cfg *config.Config) []namedSet {
	var bridges, subnets, sources, gateways, addrs, ports, allows []string
	// The same facts for the VMs with IPv6, and what IPv6 needs besides:
	// the VMs' MACs (link-local and DAD sources), the addresses a VM may
	// advertise in neighbour advertisements, and the ULA networks behind
	// NAT66.
	var bridges6, nat66, sources6, macs, targets6, gateways6, addrs6, ports6, allows6 []string
	for _, vm := range cfg.VMs {
		n := vm.Net
		bridges = append(bridges, quote(n.Bridge))
		subnets = append(subnets, n.Subnet.String())
		sources = append(sources, fmt.Sprintf("%s . %s . %s", quote(n.Bridge), n.Address, n.MAC))
		gateways = append(gateways, fmt.Sprintf("%s . %s", quote(n.Bridge), n.Gateway))
		addrs = append(addrs, n.Address.String())
		for _, p := range vm.Ports {
			ports = append(ports, fmt.Sprintf("%s . %s . %s", n.Address, p.Proto, portRange(p)))
		}
		if !n.HasIPv6() {
			continue
		}
		bridges6 = append(bridges6, quote(n.Bridge))
		if !n.Routed6 {
			nat66 = append(nat66, n.Subnet6.String())
		}
		sources6 = append(sources6, fmt.Sprintf("%s . %s . %s", quote(n.Bridge), n.Address6, n.MAC))
		macs = append(macs, fmt.Sprintf("%s . %s", quote(n.Bridge), n.MAC))
		a16 := n.Address6.As16()
		targets6 = append(targets6, fmt.Sprintf("%s . 0x%x", quote(n.Bridge), a16[:]))
		gateways6 = append(gateways6, fmt.Sprintf("%s . %s", quote(n.Bridge), n.Gateway6))
		addrs6 = append(addrs6, n.Address6.String())
		for _, p := range vm.Ports {
			ports6 = append(ports6, fmt.Sprintf("%s . %s . %s", n.Address6, p.Proto, portRange(p)))
		}
	}
	for _, a := range cfg.Allow {
		from, to := cfg.VM(a.From), cfg.VM(a.To)
		for _, p := range a.Ports {
			allows = append(allows, fmt.Sprintf("%s . %s . %s . %s", quote(from.Net.Bridge), to.Net.Address, p.Proto, portRange(p)))
			if from.Net.HasIPv6() && to.Net.HasIPv6() {
				allows6 = append(allows6, fmt.Sprintf("%s . %s . %s . %s", quote(from.Net.Bridge), to.Net.Address6, p.Proto, portRange(p)))
			}
		}
	}

	return []namedSet{
		{name: "vm_bridges", typ: "ifname", elems: bridges},
		{name: "vm_subnets", typ: "ipv4_addr", flags: "interval", elems: subnets},
		{name: "vm_addrs", typ: "ipv4_addr", elems: addrs},
		{name: "vm_sources", typ: "ifname . ipv4_addr . ether_addr", elems: sources},
		{name: "vm_gateways", typ: "ifname . ipv4_addr", elems: gateways},
		{name: "vm_ports", typ: "ipv4_addr . inet_proto . inet_service", flags: "interval", elems: ports},
		{name: "vm_allow", typ: "ifname . ipv4_addr . inet_proto . inet_service", flags: "interval", elems: allows},
		{name: "vm_bridges6", typ: "ifname", elems: bridges6},
		{name: "vm_nat66", typ: "ipv6_addr", flags: "interval", elems: nat66},
		{name: "vm_addrs6", typ: "ipv6_addr", elems: addrs6},
		{name: "vm_sources6", typ: "ifname . ipv6_addr . ether_addr", elems: sources6},
		{name: "vm_macs", typ: "ifname . ether_addr", elems: macs},
		{name: "vm_nd_targets", typeOf: "iifname . @th,64,128", elems: targets6},
		{name: "vm_gateways6", typ: "ifname . ipv6_addr", elems: gateways6},
		{name: "vm_ports6", typ: "ipv6_addr . inet_proto . inet_service", flags: "interval", elems: ports6},
		{name: "vm_allow6", typ: "ifname . ipv6_addr . inet_proto . inet_service", flags: "interval", elems: allows6},
	}
}

// preroutingChains: anti-spoofing before conntrack, and the mark of a
// VM's connection to a Kubernetes Service before kube-proxy's DNAT.
func preroutingChains(w writeFunc) {
	// Anti-spoofing, before conntrack: a VM's bridge carries only IPv4
	// from the VM's own MAC and address, and IPv6 only for a VM with IPv6:
	// from its MAC, from its own address (or link-local, or unspecified for
	// duplicate address detection), never a router advertisement or
	// redirect, and no neighbour advertisement for an address of its
	// network that is not its own.
	w("\tchain antispoof {")
	w("\t\ttype filter hook prerouting priority raw; policy accept;")
	w("\t\tiifname @vm_bridges meta nfproto ipv6 iifname != @vm_bridges6 drop")
	w("\t\tiifname @vm_bridges iifname . ip saddr . ether saddr != @vm_sources drop")
	w("\t\tiifname @vm_bridges6 meta nfproto ipv6 iifname . ether saddr != @vm_macs drop")
	w("\t\tiifname @vm_bridges6 icmpv6 type { nd-router-advert, nd-redirect } counter drop")
	w("\t\tiifname @vm_bridges6 icmpv6 type nd-neighbor-advert @th,64,16 != 0xfe80 iifname . @th,64,128 != @vm_nd_targets counter drop")
	w("\t\tiifname @vm_bridges6 ip6 saddr { ::, fe80::/10 } accept")
	w("\t\tiifname @vm_bridges6 iifname . ip6 saddr . ether saddr != @vm_sources6 counter drop")
	w("\t}")

	// A VM's connection to a Kubernetes Service range, marked before
	// kube-proxy translates it (dstnat), so that the forward chain can
	// tell it from a VM's connection to another VM's own address.
	w("\tchain k8s_services_mark {")
	w("\t\ttype filter hook prerouting priority mangle; policy accept;")
	for _, f := range families {
		w("\t\tiifname @vm_bridges %s daddr @k8s_services%s meta mark set meta mark | %s", f.match, f.suffix, ServiceMark)
	}
	w("\t}")

}

// natChains: host port forwards into VMs (from elsewhere and from the
// host itself) and masquerade out of the uplink.
func natChains(w writeFunc, cfg *config.Config, opts Options) {
	// Host port forwards: traffic to a local address (not from a VM) on the
	// host port goes to the VM's port.
	w("\tchain dnat_in {")
	w("\t\ttype nat hook prerouting priority dstnat; policy accept;")
	for _, f := range cfg.Forwards {
		n := cfg.VM(f.VM).Net
		w("\t\tiifname != @vm_bridges fib daddr type local meta nfproto ipv4 %s dport %d dnat ip to %s:%d", f.Proto, f.HostPort, n.Address, f.Port)
		if n.HasIPv6() {
			w("\t\tiifname != @vm_bridges fib daddr type local meta nfproto ipv6 %s dport %d dnat ip6 to [%s]:%d", f.Proto, f.HostPort, n.Address6, f.Port)
		}
	}
	w("\t}")
	w("\tchain dnat_local {")
	w("\t\ttype nat hook output priority -100; policy accept;")
	for _, f := range cfg.Forwards {
		n := cfg.VM(f.VM).Net
		w("\t\tfib daddr type local ip daddr != 127.0.0.0/8 %s dport %d dnat ip to %s:%d", f.Proto, f.HostPort, n.Address, f.Port)
		if n.HasIPv6() {
			w("\t\tfib daddr type local ip6 daddr != ::1 %s dport %d dnat ip6 to [%s]:%d", f.Proto, f.HostPort, n.Address6, f.Port)
		}
	}
	w("\t}")

	w("\tchain nat_out {")
	w("\t\ttype nat hook postrouting priority srcnat; policy accept;")
	if opts.Uplink != "" {
		w("\t\toifname %s ip saddr @vm_subnets masquerade", quote(opts.Uplink))
		w("\t\toifname %s ip6 saddr @vm_nat66 masquerade", quote(opts.Uplink))
	}
	w("\t}")

}

// forwardChains: VM to VM only where allowed; into VMs only replies,
// forwards and declared ports; out of VMs as their egress says.
func forwardChains(w writeFunc, cfg *config.Config) {
	// Forwarding: VM to VM only where allowed; into VMs only replies,
	// forwards and declared ports; out of VMs to the world is free.
	w("\tchain forward {")
	w("\t\ttype filter hook forward priority filter; policy accept;")
	w("\t\tiifname @vm_bridges ct state invalid drop")
	w("\t\toifname @vm_bridges ct state invalid drop")
	w("\t\tct state established,related accept")
	w("\t\tiifname @vm_bridges oifname @vm_bridges jump vm_to_vm")
	w("\t\toifname @vm_bridges jump into_vm")
	w("\t\tiifname @vm_bridges jump egress")
	w("\t}")
	// Out of VMs beyond the VM networks: a VM's own allow, its own deny,
	// offline VMs, then the fleet's allow and deny (link-local and the
	// cloud metadata services among them by default).
	w("\tchain egress {")
	for _, f := range families {
		w("\t\tiifname . %s daddr @vm_egress_allow%s accept", f.match, f.suffix)
		w("\t\tiifname . %s daddr . meta l4proto . th dport @vm_egress_allow%s_ports accept", f.match, f.suffix)
		w("\t\tiifname . %s daddr @vm_egress_deny%s counter drop", f.match, f.suffix)
		w("\t\tiifname . %s daddr . meta l4proto . th dport @vm_egress_deny%s_ports counter drop", f.match, f.suffix)
	}
	w("\t\tiifname @vm_offline counter drop")
	for _, f := range families {
		w("\t\t%s daddr @egress_allow%s accept", f.match, f.suffix)
		w("\t\t%s daddr . meta l4proto . th dport @egress_allow%s_ports accept", f.match, f.suffix)
		w("\t\t%s daddr @egress_deny%s counter drop", f.match, f.suffix)
		w("\t\t%s daddr . meta l4proto . th dport @egress_deny%s_ports counter drop", f.match, f.suffix)
	}
	w("\t}")
	w("\tchain vm_to_vm {")
	for _, f := range families {
		w("\t\tiifname . %s daddr . meta l4proto . th dport @vm_allow%s accept", f.match, f.suffix)
	}
	// A connection to a Kubernetes Service (marked before kube-proxy's
	// DNAT) that kube-proxy sent on to a pod's VM: to the Service's own
	// endpoints only.
	w("\t\tmeta mark & %s == %s ct status dnat accept", ServiceMark, ServiceMark)
	w("\t\tcounter drop")
	w("\t}")
	w("\tchain into_vm {")
	w("\t\tct status dnat accept")
	for _, f := range families {
		w("\t\t%s daddr . meta l4proto . th dport @vm_ports%s accept", f.match, f.suffix)
	}
	if cfg.Host.Tailscale.AdvertiseRoutes {
		for _, f := range families {
			w("\t\tiifname %s %s daddr @vm_addrs%s tcp dport 22 accept", quote(cfg.Host.Tailscale.TUN()), f.match, f.suffix)
		}
	}
	w("\t\tcounter drop")
	w("\t}")

}

// inputChains: from VMs to the host only ICMP echo and DNS to their own
// gateway; from the uplink, when the file names ports, only those.
func inputChains(w writeFunc, cfg *config.Config, opts Options) {
	// VM to host: only ICMP echo and DNS (the daemon's resolver) to the
	// VM's own gateway.
	w("\tchain input {")
	w("\t\ttype filter hook input priority filter; policy accept;")
	w("\t\tiifname @vm_bridges jump vm_to_host")
	if len(cfg.Host.AllowedTCPPorts) > 0 && opts.Uplink != "" {
		up := quote(opts.Uplink)
		w("\t\tiifname %s ct state established,related accept", up)
		w("\t\tiifname %s icmp type { echo-request, destination-unreachable, time-exceeded } accept", up)
		w("\t\tiifname %s icmpv6 type { echo-request, destination-unreachable, packet-too-big, time-exceeded, parameter-problem, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } accept", up)
		w("\t\tiifname %s tcp dport { %s } accept", up, joinInts(cfg.Host.AllowedTCPPorts))
		if cfg.Host.Tailscale.AdvertiseRoutes {
			// tailscaled's WireGuard port: direct connections from peers
			// whose NAT hole punching cannot open.
			w("\t\tiifname %s udp dport %d accept", up, cfg.Host.Tailscale.UDPPort())
		}
		w("\t\tiifname %s ct status dnat accept", up)
		w("\t\tiifname %s counter drop", up)
	}
	w("\t}")
	w("\tchain vm_to_host {")
	w("\t\tct state established,related accept")
	w("\t\ticmp type echo-request iifname . ip daddr @vm_gateways accept")
	w("\t\tmeta l4proto { udp, tcp } th dport 53 iifname . ip daddr @vm_gateways accept")
	w("\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept")
	w("\t\ticmpv6 type echo-request iifname . ip6 daddr @vm_gateways6 accept")
	w("\t\tmeta l4proto { udp, tcp } th dport 53 iifname . ip6 daddr @vm_gateways6 accept")
	w("\t\tcounter drop")
	w("\t}")
}

// serviceSets are host.serviceCIDRs, IPv4 and IPv6 apart.
func serviceSets(cfg *config.Config) []namedSet {
	var v4, v6 []string
	for _, s := range cfg.Host.ServiceCIDRs {
		p, err := config.ServiceCIDR(s)
		switch {
		case err != nil: // refused by validation
		case p.Addr().Is4():
			v4 = append(v4, p.String())
		default:
			v6 = append(v6, p.String())
		}
	}
	return []namedSet{
		{name: "k8s_services", typ: "ipv4_addr", flags: "interval", autoMerge: true, elems: v4},
		{name: "k8s_services6", typ: "ipv6_addr", flags: "interval", autoMerge: true, elems: v6},
	}
}

// families are IPv4 and IPv6 as the rules match them (ip, ip6) and as
// their sets are named (vm_ports, vm_ports6).
var families = []struct{ match, suffix string }{{"ip", ""}, {"ip6", "6"}}

// namedSet is one set of the ruleset with its elements.
type namedSet struct {
	name, typ string
	// typeOf declares the set by expression instead of type (a raw
	// payload, as the neighbour advertisement's target).
	typeOf string
	// flags are the set's flags ("interval"; "" for none).
	flags string
	// autoMerge merges overlapping intervals instead of refusing them.
	autoMerge bool
	elems     []string
}

func (s namedSet) write(w func(string, ...any)) {
	w("\tset %s {", s.name)
	if s.typeOf != "" {
		w("\t\ttypeof %s", s.typeOf)
	} else {
		w("\t\ttype %s", s.typ)
	}
	if s.flags != "" {
		w("\t\tflags %s", s.flags)
	}
	if s.autoMerge {
		w("\t\tauto-merge")
	}
	if len(s.elems) > 0 {
		w("\t\telements = {")
		for i, e := range s.elems {
			sep := ","
			if i == len(s.elems)-1 {
				sep = ""
			}
			w("\t\t\t%s%s", e, sep)
		}
		w("\t\t}")
	}
	w("\t}")
}

func quote(s string) string { return `"` + s + `"` }

func portRange(p config.Port) string {
	if p.From == p.To {
		return fmt.Sprint(p.From)
	}
	return fmt.Sprintf("%d-%d", p.From, p.To)
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ", ")
}

// RuleCount counts the rules of a rendered body (set elements are not rules).
func RuleCount(body string) int {
	n := 0
	for _, c := range ChainRules(body) {
		n += c
	}
	return n
}

// ChainRules counts the rules of each chain of a rendered body.
func ChainRules(body string) map[string]int {
	counts := map[string]int{}
	chain, inElems := "", false
	for _, line := range strings.Split(body, "\n") {
		t := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(t, "elements = {"):
			inElems = true
		case inElems:
			if t == "}" {
				inElems = false
			}
		case strings.HasPrefix(t, "chain "):
			chain = strings.TrimSuffix(strings.TrimSpace(strings.TrimPrefix(t, "chain ")), " {")
			counts[chain] = 0
		case strings.HasPrefix(t, "set "):
			chain = ""
		case t == "" || t == "}" || strings.HasPrefix(t, "table ") || strings.HasPrefix(t, "type ") ||
			strings.HasPrefix(t, "flags ") || strings.HasPrefix(t, "comment "):
		default:
			if chain != "" {
				counts[chain]++
			}
		}
	}
	return counts
}
