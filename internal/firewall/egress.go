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
			if len(r.Ports) == 0 {
				m[kind] = append(m[kind], prefix+p.String())
				continue
			}
			for _, port := range r.Ports {
				m[kind+"_ports"] = append(m[kind+"_ports"], fmt.Sprintf("%s%s . %s . %s", prefix, p, port.Proto, portRange(port)))
			}
		}
	}
	for _, p := range config.BlockedByDefault() {
		fleet["deny"] = append(fleet["deny"], p.String())
	}
	add(fleet, "allow", "", cfg.Egress.Allow)
	add(fleet, "deny", "", cfg.Egress.Deny)
	for _, vm := range cfg.VMs {
		br := quote(vm.Net.Bridge) + " . "
		add(perVM, "allow", br, vm.Egress.Allow)
		add(perVM, "deny", br, vm.Egress.Deny)
	}
	var out []namedSet
	for _, kind := range []string{"allow", "allow_ports", "deny", "deny_ports"} {
		typ, plain := "ipv4_addr", true
		if kind == "allow_ports" || kind == "deny_ports" {
			typ, plain = "ipv4_addr . inet_proto . inet_service", false
		}
		out = append(out,
			namedSet{name: "egress_" + kind, typ: typ, flags: "interval", autoMerge: plain, elems: dedupe(fleet[kind])},
			namedSet{name: "vm_egress_" + kind, typ: "ifname . " + typ, flags: "interval", elems: dedupe(perVM[kind])})
	}
	var offline []string
	for _, vm := range cfg.VMs {
		if vm.Egress.Offline() {
			offline = append(offline, quote(vm.Net.Bridge))
		}
	}
	var deny6 []string
	for _, p := range config.BlockedByDefault6() {
		deny6 = append(deny6, p.String())
	}
	return append(out, namedSet{name: "vm_offline", typ: "ifname", elems: offline},
		namedSet{name: "egress_deny6", typ: "ipv6_addr", flags: "interval", elems: deny6})
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
