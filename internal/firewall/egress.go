package firewall

import (
	"fmt"
	"sort"

	"microvm.dev/microvm/internal/config"
)

// namedSet is one set of the ruleset with its elements.
type namedSet struct {
	name, typ string
	elems     []string
}

// egress are the egress policy's sets, in the order they are declared.
type egress []namedSet

// egressSets renders the fleet's and every VM's egress rules as sets: with
// and without ports, allowed and denied, fleet-wide (by destination) and
// per VM (by its bridge and destination). The fleet's deny always holds
// config.BlockedByDefault.
func egressSets(cfg *config.Config) egress {
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
	var out egress
	for _, kind := range []string{"allow", "allow_ports", "deny", "deny_ports"} {
		typ := "ipv4_addr"
		if kind == "allow_ports" || kind == "deny_ports" {
			typ = "ipv4_addr . inet_proto . inet_service"
		}
		out = append(out, namedSet{"egress_" + kind, typ, dedupe(fleet[kind])})
		out = append(out, namedSet{"vm_egress_" + kind, "ifname . " + typ, dedupe(perVM[kind])})
	}
	return out
}

// offline are the bridges of the VMs that may reach nothing beyond their
// gateway but their allows.
func (egress) offline(cfg *config.Config) []string {
	var out []string
	for _, vm := range cfg.VMs {
		if vm.Egress.Offline() {
			out = append(out, quote(vm.Net.Bridge))
		}
	}
	return out
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
