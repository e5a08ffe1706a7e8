package config

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/invopop/jsonschema"
	"go.yaml.in/yaml/v3"
)

// Protocols a port rule may name.
const (
	ProtoTCP = "tcp"
	ProtoUDP = "udp"
)

// Port is a port or range of ports with a protocol, written 8080, "8080",
// "5432/tcp", "53/udp" or "6000-6010/tcp". The protocol defaults to tcp.
type Port struct {
	// From is the first port of the range.
	From int `json:"from"`
	// To is the last port of the range (equal to From for a single port).
	To int `json:"to"`
	// Proto is "tcp" or "udp".
	Proto string `json:"proto"`
}

// ParsePort reads a port as written in the file.
func ParsePort(s string) (Port, error) {
	p := Port{Proto: ProtoTCP}
	spec := strings.TrimSpace(s)
	if i := strings.IndexByte(spec, '/'); i >= 0 {
		p.Proto = strings.ToLower(spec[i+1:])
		spec = spec[:i]
		if p.Proto != ProtoTCP && p.Proto != ProtoUDP {
			return Port{}, fmt.Errorf("port %q: protocol must be tcp or udp, not %q", s, p.Proto)
		}
	}
	from, to, isRange := strings.Cut(spec, "-")
	var err error
	if p.From, err = parsePortNumber(from); err != nil {
		return Port{}, fmt.Errorf("port %q: %w", s, err)
	}
	p.To = p.From
	if isRange {
		if p.To, err = parsePortNumber(to); err != nil {
			return Port{}, fmt.Errorf("port %q: %w", s, err)
		}
		if p.To < p.From {
			return Port{}, fmt.Errorf("port range %q ends before it starts", s)
		}
	}
	return p, nil
}

func parsePortNumber(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%q is not a port number", s)
	}
	if n < 1 || n > 65535 {
		return 0, fmt.Errorf("%d is outside 1-65535", n)
	}
	return n, nil
}

// String writes the port back in the file's notation ("5432/tcp", "6000-6010/udp").
func (p Port) String() string {
	if p.From == p.To {
		return fmt.Sprintf("%d/%s", p.From, p.Proto)
	}
	return fmt.Sprintf("%d-%d/%s", p.From, p.To, p.Proto)
}

// Overlaps reports whether two port specs share a protocol and a port.
func (p Port) Overlaps(q Port) bool {
	return p.Proto == q.Proto && p.From <= q.To && q.From <= p.To
}

// MarshalText writes the port as String does.
func (p Port) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText reads a port as ParsePort does.
func (p *Port) UnmarshalText(b []byte) error {
	v, err := ParsePort(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

func (p *Port) decodeYAML(d *decoder, n *yaml.Node, path string) {
	if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!str" && n.ShortTag() != "!!int") {
		d.wrongType(n, path, `a port such as 8080 or "5432/tcp"`)
		return
	}
	v, err := ParsePort(n.Value)
	if err != nil {
		d.r.addAt(n.Line, path, "%v", err)
		return
	}
	*p = v
}

// JSONSchema describes Port for editors.
func (Port) JSONSchema() *jsonschema.Schema {
	return &jsonschema.Schema{
		OneOf: []*jsonschema.Schema{
			{Type: "integer", Minimum: "1", Maximum: "65535"},
			{Type: "string", Pattern: `^[0-9]{1,5}(-[0-9]{1,5})?(/(tcp|udp))?$`},
		},
		Description: `A port or range with an optional protocol: 8080, "5432/tcp", "6000-6010/udp" (tcp by default).`,
	}
}
