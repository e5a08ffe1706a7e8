package firewall

import (
	"fmt"
	"sort"

	"microvm.dev/microvm/internal/config"
)

// egressSets renders the fleet's and every VM's egress rules as sets: with
// and without ports, allowed and denied, fleet-wide (by destination) and
// per VM (by its bridge and destination), then the offline VMs' bridges.
// The fleet's deny always holds config.BlockedByDefault; a deny inside it
// (or an allow inside another) overlaps, so the plain address sets merge.
func egressSets(cfg *config.Config) []namedSet {
	fleet := map[string][]string{}
	perVM := map[string][]string{}
	add := func(m map[string][]string, kind, prefix string, rules []config.EgressRule) {
		for _, r := range rules {
			p, ok := r.Prefix()
			if !ok {
				continue // validation refused it
			}
			k := kind
			if p.Addr().Is6() {
				k += "6"
			}
			if len(r.Ports) == 0 {
				m[k] = append(m[k], prefix+p.String())
				continue
			}
			for _, port := range r.Ports {
				m[k+"_ports"] = append(m[k+"_ports"], fmt.Sprintf("%s%s . %s . %s", prefix, p, port.Proto, portRange(port)))
			}
		}
	}
	for _, p := range append(config.BlockedByDefault(), config.BlockedByDefault6()...) {
		if p.Addr().Is6() {
			fleet["deny6"] = append(fleet["deny6"], p.String())
		} else {
			fleet["deny"] = append(fleet["deny"], p.String())
		}
	}
	add(fleet, "allow", "", cfg.Egress.Allow)
	add(fleet, "deny", "", cfg.Egress.Deny)
	for _, vm := range cfg.VMs {
		br := quote(vm.Net.Bridge) + " . "
		add(perVM, "allow", br, vm.Egress.Allow)
		add(perVM, "deny", br, vm.Egress.Deny)
	}
	var out []namedSet
	for _, family := range []struct{ suffix, addr string }{{"", "ipv4_addr"}, {"6", "ipv6_addr"}} {
		for _, kind := range []string{"allow", "deny"} {
			plain, ports := kind+family.suffix, kind+family.suffix+"_ports"
			withPorts := family.addr + " . inet_proto . inet_service"
			out = append(out,
				namedSet{name: "egress_" + plain, typ: family.addr, flags: "interval", autoMerge: true, elems: dedupe(fleet[plain])},
				namedSet{name: "vm_egress_" + plain, typ: "ifname . " + family.addr, flags: "interval", elems: dedupe(perVM[plain])},
				namedSet{name: "egress_" + ports, typ: withPorts, flags: "interval", elems: dedupe(fleet[ports])},
				namedSet{name: "vm_egress_" + ports, typ: "ifname . " + withPorts, flags: "interval", elems: dedupe(perVM[ports])})
		}
	}
	var offline []string
	for _, vm := range cfg.VMs {
		if vm.Egress.Offline() {
			offline = append(offline, quote(vm.Net.Bridge))
		}
	}
	return append(out, namedSet{name: "vm_offline", typ: "ifname", elems: offline})
}

// dedupe sorts elements and drops repeats; an interval set refuses an
// element given twice.
func dedupe(elems []string) []string {
	sort.Strings(elems)
	out := elems[:0]
	for i, e := range elems {
		if i == 0 || e != elems[i-1] {
			out = append(out, e)
		}
	}
	return out
}
