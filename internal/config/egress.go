package config

import (
	"net/netip"
	"strings"

	"github.com/invopop/jsonschema"
	"go.yaml.in/yaml/v3"
)

// Egress says where VMs may open connections beyond the VM networks:
// network.egress for every VM, a VM's own egress (or the defaults') for
// it. Without any, a VM reaches the internet through NAT but never
// link-local addresses (169.254.0.0/16: the cloud metadata services at
// 169.254.169.254 and 169.254.170.2 among them) nor the host's own
// addresses beyond its gateway. A VM's rules come first: its allow, its
// deny, internet: false (write egress: none), then the fleet's allow and
// deny.
type Egress struct {
	// Internet: false cuts the VM off everything beyond its gateway but what
	// its own allow opens (egress: none is short for it). Per VM only.
	Internet *bool `yaml:"internet,omitempty" json:"internet,omitempty"`
	// Allow opens destinations that the default or a deny closes.
	Allow []EgressRule `yaml:"allow,omitempty" json:"allow,omitempty"`
	// Deny closes more destinations (a LAN, a peer network).
	Deny []EgressRule `yaml:"deny,omitempty" json:"deny,omitempty"`
}

// EgressRule is a destination: an IPv4 or IPv6 network or address, with
// ports (every port and protocol when none are given).
type EgressRule struct {
	// To is a CIDR (10.20.0.0/16, 2001:db8:20::/48) or an address
	// (10.20.0.5).
	To string `yaml:"to" json:"to" jsonschema:"required"`
	// Ports limits the rule to these ports, e.g. "5432/tcp".
	Ports []Port `yaml:"ports,omitempty" json:"ports,omitempty"`
}

// Offline says the VM may reach nothing beyond its gateway but its allows.
func (e Egress) Offline() bool { return e.Internet != nil && !*e.Internet }

// Prefix is the rule's destination as a prefix (an address is a /32 or
// a /128).
func (r EgressRule) Prefix() (netip.Prefix, bool) {
	if p, err := netip.ParsePrefix(r.To); err == nil && !p.Addr().Is4In6() && p.Addr().Zone() == "" {
		return p.Masked(), true
	}
	if a, err := netip.ParseAddr(r.To); err == nil && !a.Is4In6() && a.Zone() == "" {
		return netip.PrefixFrom(a, a.BitLen()), true
	}
	return netip.Prefix{}, false
}

// BlockedByDefault6 is what no VM reaches over IPv6: AWS's metadata
// service at fd00:ec2::254 (link-local addresses are never forwarded).
func BlockedByDefault6() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("fd00:ec2::254/128")}
}

// BlockedByDefault are the destinations no VM reaches unless allowed:
// link-local (with the AWS, GCP and Azure metadata service at
// 169.254.169.254 and ECS's at 169.254.170.2) and Alibaba Cloud's metadata
// service.
func BlockedByDefault() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("169.254.0.0/16"), netip.MustParsePrefix("100.100.100.200/32")}
}

func (e *Egress) decodeYAML(d *decoder, n *yaml.Node, path string) {
	if n.Kind == yaml.ScalarNode {
		if n.ShortTag() == "!!str" && n.Value == "none" {
			off := false
			*e = Egress{Internet: &off}
			return
		}
		d.wrongType(n, path, `"none" or a mapping {internet, allow, deny}`)
		return
	}
	type plain Egress // no decodeYAML: decoded field by field
	var p plain
	d.decodeStruct(n, reflectValueOf(&p), path)
	*e = Egress(p)
}

// JSONSchema describes Egress for editors.
func (Egress) JSONSchema() *jsonschema.Schema {
	rule := &jsonschema.Schema{Type: "object", Required: []string{"to"}, AdditionalProperties: jsonschema.FalseSchema, Properties: jsonschema.NewProperties()}
	rule.Properties.Set("to", &jsonschema.Schema{Type: "string", Description: "A CIDR or an address, IPv4 or IPv6."})
	rule.Properties.Set("ports", &jsonschema.Schema{Type: "array", Items: Port{}.JSONSchema(), Description: `Ports such as "5432/tcp"; none: every port and protocol.`})
	props := jsonschema.NewProperties()
	props.Set("internet", &jsonschema.Schema{Type: "boolean", Description: "false cuts the VM off everything beyond its gateway but its allows."})
	props.Set("allow", &jsonschema.Schema{Type: "array", Items: rule, Description: "Destinations opened."})
	props.Set("deny", &jsonschema.Schema{Type: "array", Items: rule, Description: "Destinations closed."})
	return &jsonschema.Schema{
		OneOf: []*jsonschema.Schema{
			{Type: "string", Enum: []any{"none"}},
			{Type: "object", Properties: props, AdditionalProperties: jsonschema.FalseSchema},
		},
		Description: `Where the VM may connect beyond the VM networks: "none", or {internet, allow, deny}.`,
	}
}

// egress checks an egress section at path p; fleet says it is
// network.egress, where internet does not apply.
func (v *validator) egress(p string, e *Egress, fleet bool) {
	if e == nil {
		return
	}
	if fleet && e.Internet != nil {
		v.r.addf(joinPath(p, "internet"), "internet is per VM (vms.<name>.egress or defaults.egress)")
	}
	for kind, rules := range map[string][]EgressRule{"allow": e.Allow, "deny": e.Deny} {
		for i, r := range rules {
			if _, ok := r.Prefix(); !ok {
				v.r.addf(joinPath(indexPath(joinPath(p, kind), i), "to"), "%q is not a network (10.20.0.0/16, 2001:db8:20::/48) or address", strings.TrimSpace(r.To))
			}
		}
	}
}
