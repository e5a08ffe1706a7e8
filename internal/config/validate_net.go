package config

import (
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// The checks of the VMs' networks: IPv6 prefixes, subnets, what VMs
// must not share, and the allow and forward rules between them.

// ipv6Prefix checks host.ipv6Prefix and keeps what it means for net6.
func (v *validator) ipv6Prefix(s string) {
	const p = "host.ipv6Prefix"
	switch s {
	case "":
		v.v6 = ipv6Plan{on: true}
		return
	case IPv6None:
		return
	}
	pfx, err := netip.ParsePrefix(s)
	switch {
	case err != nil || !pfx.Addr().Is6() || pfx.Addr().Is4In6():
		v.r.addf(p, "%q is not an IPv6 prefix such as 2001:db8:42::/48 (or none)", s)
	case pfx.Masked() != pfx:
		v.r.addf(p, "prefix %s has host bits set; did you mean %s?", pfx, pfx.Masked())
	case pfx.Bits() < 32 || pfx.Bits() > 56:
		v.r.addf(p, "prefix %s is /%d: it must be /32 to /56, room for one /64 per VM index", pfx, pfx.Bits())
	case !usable6(pfx.Addr()):
		v.r.addf(p, "prefix %s is not usable for VM networks (loopback, link-local, multicast or unspecified)", pfx)
	default:
		v.v6 = ipv6Plan{on: true, prefix: pfx}
	}
}

// ipv6Plan is how VMs without subnet6 get their IPv6 network.
type ipv6Plan struct {
	on     bool
	prefix netip.Prefix // a routed prefix; invalid: the ULA scheme
}

// net6 gives vm its IPv6 network: its subnet6, else the host's scheme.
func (v *validator) net6(p string, vm *VM, s VMSpec) {
	switch {
	case s.Subnet6 != nil:
		sp := joinPath(p, "subnet6")
		pfx, err := netip.ParsePrefix(*s.Subnet6)
		switch {
		case err != nil || !pfx.Addr().Is6() || pfx.Addr().Is4In6():
			v.r.addf(sp, "%q is not an IPv6 subnet such as fd00:1:2:3::/64", *s.Subnet6)
		case pfx.Bits() != 64:
			v.r.addf(sp, "subnet6 %s is /%d: a VM's IPv6 network is a /64 (what SLAAC and router advertisements need)", pfx, pfx.Bits())
		case pfx.Masked() != pfx:
			v.r.addf(sp, "subnet6 %s has host bits set; did you mean %s?", pfx, pfx.Masked())
		case !usable6(pfx.Addr()):
			v.r.addf(sp, "subnet6 %s is not usable for a VM network (loopback, link-local, multicast or unspecified)", pfx)
		default:
			deriveNet6(&vm.Net, pfx, !isULA(pfx.Addr()))
		}
	case !v.v6.on:
	case v.v6.prefix.IsValid() && vm.Index == 0:
		v.r.addf(p, "needs index or subnet6: VMs' IPv6 networks come from host.ipv6Prefix %s by index", v.v6.prefix)
	case v.v6.prefix.IsValid():
		deriveNet6(&vm.Net, RoutedSubnet6(v.v6.prefix, vm.Index), !isULA(v.v6.prefix.Addr()))
	default:
		deriveNet6(&vm.Net, ULASubnet6(vm.Net.Subnet), false)
	}
}

func usable6(a netip.Addr) bool {
	return !a.IsLoopback() && !a.IsLinkLocalUnicast() && !a.IsMulticast() && !a.IsUnspecified()
}

// isULA says a is a unique local address (fc00::/7): reached through NAT66.
func isULA(a netip.Addr) bool { return a.Is6() && a.As16()[0]&0xfe == 0xfc }

// subnet parses and checks a VM subnet.
func (v *validator) subnet(p, s string) (netip.Prefix, bool) {
	pfx, err := netip.ParsePrefix(s)
	if err != nil {
		v.r.addf(p, "%q is not a CIDR subnet such as 192.168.50.0/24", s)
		return netip.Prefix{}, false
	}
	switch a := pfx.Addr(); {
	case !a.Is4():
		v.r.addf(p, "subnet %s is not IPv4 (VM networks are IPv4)", pfx)
	case pfx.Masked() != pfx:
		v.r.addf(p, "subnet %s has host bits set; did you mean %s?", pfx, pfx.Masked())
	case pfx.Bits() > 30:
		v.r.addf(p, "subnet %s is too small: it needs room for the gateway (.1) and the VM (.2), so /30 or larger", pfx)
	case a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() || a.As4()[0] == 0 || a.As4()[0] >= 224:
		v.r.addf(p, "subnet %s is not usable for a VM network (loopback, link-local, multicast or reserved)", pfx)
	default:
		return pfx, true
	}
	return netip.Prefix{}, false
}

// crossVM checks what VMs must not share: index, subnet, and the host's own addresses.
func (v *validator) crossVM(cfg *Config) {
	var hosted, unhosted []string
	for _, vm := range cfg.VMs {
		if vm.Host != "" {
			hosted = append(hosted, vm.Name)
		} else {
			unhosted = append(unhosted, vm.Name)
		}
	}
	if len(hosted) > 0 && len(unhosted) > 0 {
		v.r.addf(joinPath(joinPath("vms", unhosted[0]), "host"), "%s names no host while %s does: when one file drives several hosts, every VM names its host", unhosted[0], hosted[0])
	}
	byIndex := map[int]string{}
	type span struct {
		vm   *VM
		from netip.Addr
		to   netip.Addr
	}
	var spans []span
	for _, vm := range cfg.VMs {
		if vm.Index > 0 {
			if other, dup := byIndex[vm.Index]; dup {
				v.r.addf(joinPath(joinPath("vms", vm.Name), "index"), "index %d is also used by %s", vm.Index, other)
			} else {
				byIndex[vm.Index] = vm.Name
			}
		}
		if vm.Net.Subnet.IsValid() {
			spans = append(spans, span{vm, vm.Net.Subnet.Addr(), lastAddr(vm.Net.Subnet)})
		}
	}
	// Sort by start; a span overlaps an earlier one iff it starts before the
	// furthest end seen so far.
	sort.Slice(spans, func(i, j int) bool {
		if c := spans[i].from.Compare(spans[j].from); c != 0 {
			return c < 0
		}
		return spans[i].vm.Name < spans[j].vm.Name
	})
	var far *span
	for i := range spans {
		s := &spans[i]
		sameIndex := far != nil && s.vm.Index > 0 && s.vm.Index == far.vm.Index // reported as a duplicate index
		if far != nil && s.from.Compare(far.to) <= 0 && !sameIndex {
			v.r.addf(v.subnetPath(s.vm), "subnet %s overlaps %s of %s", s.vm.Net.Subnet, far.vm.Net.Subnet, far.vm.Name)
		}
		if far == nil || s.to.Compare(far.to) > 0 {
			far = s
		}
	}
	by6 := map[netip.Prefix]string{}
	for _, vm := range cfg.VMs {
		if !vm.Net.HasIPv6() {
			continue
		}
		if other, dup := by6[vm.Net.Subnet6]; dup {
			// Two derived ones can only meet where the index or the IPv4
			// subnets already clash, which is reported.
			if v.explicit6(vm.Name) || v.explicit6(other) {
				v.r.addf(v.subnet6Path(vm), "subnet6 %s is also %s's", vm.Net.Subnet6, other)
			}
			continue
		}
		by6[vm.Net.Subnet6] = vm.Name
	}
	for i, s := range cfg.Host.ServiceCIDRs {
		svc, err := ServiceCIDR(s)
		if err != nil {
			continue // reported with the host
		}
		for _, vm := range cfg.VMs {
			switch {
			case vm.Net.Subnet.IsValid() && vm.Net.Subnet.Overlaps(svc):
				v.r.addf(v.subnetPath(vm), "subnet %s overlaps the Service range %s (host.serviceCIDRs[%d])", vm.Net.Subnet, svc, i)
			case vm.Net.HasIPv6() && vm.Net.Subnet6.Overlaps(svc):
				v.r.addf(v.subnet6Path(vm), "subnet6 %s overlaps the Service range %s (host.serviceCIDRs[%d])", vm.Net.Subnet6, svc, i)
			}
		}
	}
	bridges := map[string]bool{}
	for _, vm := range cfg.VMs {
		bridges[vm.Net.Bridge] = true
	}
	for _, ha := range v.opts.HostAddrs {
		if bridges[ha.Interface] {
			continue
		}
		for _, vm := range cfg.VMs {
			switch {
			case ha.Prefix.Addr().Is4() && vm.Net.Subnet.IsValid() && vm.Net.Subnet.Overlaps(ha.Prefix):
				v.r.addf(v.subnetPath(vm), "subnet %s overlaps %s on the host's interface %s", vm.Net.Subnet, ha.Prefix, ha.Interface)
			case ha.Prefix.Addr().Is6() && !ha.Prefix.Addr().IsLinkLocalUnicast() && vm.Net.HasIPv6() && vm.Net.Subnet6.Overlaps(ha.Prefix):
				v.r.addf(v.subnet6Path(vm), "subnet6 %s overlaps %s on the host's interface %s", vm.Net.Subnet6, ha.Prefix, ha.Interface)
			}
		}
	}
}

// explicit6 says the file gave the VM called name its subnet6.
func (v *validator) explicit6(name string) bool {
	_, ok := v.r.lines[joinPath(joinPath("vms", name), "subnet6")]
	return ok
}

// subnet6Path is where a VM's IPv6 network came from: its subnet6 key,
// else host.ipv6Prefix (routed) or its IPv4 subnet (the ULA scheme).
func (v *validator) subnet6Path(vm *VM) string {
	if v.explicit6(vm.Name) {
		return joinPath(joinPath("vms", vm.Name), "subnet6")
	}
	if v.v6.prefix.IsValid() {
		return "host.ipv6Prefix"
	}
	return v.subnetPath(vm)
}

// subnetPath is where a VM's subnet came from: its subnet key, or its index.
func (v *validator) subnetPath(vm *VM) string {
	p := joinPath("vms", vm.Name)
	if _, ok := v.r.lines[joinPath(p, "subnet")]; ok {
		return joinPath(p, "subnet")
	}
	return joinPath(p, "index")
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	n := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	n |= host
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

func (v *validator) allows(cfg *Config, rules []Allow) []Allow {
	var out []Allow
	for i, a := range rules {
		p := indexPath("network.allow", i)
		ok := true
		for _, side := range []struct{ key, vm string }{{"from", a.From}, {"to", a.To}} {
			switch {
			case side.vm == "":
				v.r.addf(joinPath(p, side.key), "%s is required: the name of a VM", side.key)
				ok = false
			case cfg.VM(side.vm) == nil:
				v.r.addf(joinPath(p, side.key), "unknown VM %q", side.vm)
				ok = false
			}
		}
		if ok && a.From == a.To {
			v.r.addf(p, "from and to are the same VM (%s); a VM always reaches itself", a.From)
			ok = false
		}
		if ok {
			if from, to := cfg.VM(a.From), cfg.VM(a.To); from.Host != to.Host {
				v.r.addf(p, "%s runs on host %s and %s on host %s: an allow rule opens one host's firewall between two of its VMs; VMs on different hosts reach each other over the hosts' own network (a declared port, reached over the tailnet: tailscale.md), not through an allow rule",
					a.From, from.Host, a.To, to.Host)
				ok = false
			}
		}
		if len(a.Ports) == 0 {
			v.r.addf(joinPath(p, "ports"), `at least one port is required, e.g. ports: ["5432/tcp"]`)
			ok = false
		}
		if ok {
			out = append(out, a)
		}
	}
	return out
}

func (v *validator) forwards(cfg *Config, rules []Forward) []ResolvedForward {
	var out []ResolvedForward
	type key struct {
		port  int
		proto string
	}
	seen := map[key]int{}
	hostPorts := map[int]bool{}
	for _, p := range cfg.Host.AllowedTCPPorts {
		hostPorts[p] = true
	}
	for i, f := range rules {
		p := indexPath("network.forwards", i)
		rf := ResolvedForward{HostPort: f.HostPort, Proto: f.Proto}
		if rf.Proto == "" {
			rf.Proto = ProtoTCP
		}
		ok := true
		if rf.Proto != ProtoTCP && rf.Proto != ProtoUDP {
			v.r.addf(joinPath(p, "proto"), "protocol must be tcp or udp, not %q", f.Proto)
			ok = false
		}
		if f.HostPort < 1 || f.HostPort > 65535 {
			v.r.addf(joinPath(p, "hostPort"), "hostPort %d is outside 1-65535", f.HostPort)
			ok = false
		} else if j, dup := seen[key{f.HostPort, rf.Proto}]; dup {
			v.r.addf(joinPath(p, "hostPort"), "host port %d/%s is already forwarded by [%d]", f.HostPort, rf.Proto, j)
			ok = false
		} else if rf.Proto == ProtoTCP && hostPorts[f.HostPort] {
			v.r.addf(joinPath(p, "hostPort"), "host port %d is also in host.allowedTCPPorts, for the host itself", f.HostPort)
			ok = false
		} else {
			seen[key{f.HostPort, rf.Proto}] = i
		}
		vmName, portStr, found := strings.Cut(f.To, ":")
		port, err := strconv.Atoi(portStr)
		switch {
		case !found || vmName == "" || err != nil:
			v.r.addf(joinPath(p, "to"), `to must be "vm:port", not %q`, f.To)
			ok = false
		case cfg.VM(vmName) == nil:
			v.r.addf(joinPath(p, "to"), "unknown VM %q", vmName)
			ok = false
		case port < 1 || port > 65535:
			v.r.addf(joinPath(p, "to"), "port %d is outside 1-65535", port)
			ok = false
		}
		if ok {
			rf.VM, rf.Port = vmName, port
			out = append(out, rf)
		}
	}
	return out
}

// orList renders names as "a, b or c".
func orList(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}
