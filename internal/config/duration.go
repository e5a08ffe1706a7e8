package config

import (
	"time"

	"github.com/invopop/jsonschema"
	"go.yaml.in/yaml/v3"
)

// Duration is a time span written like "30s", "2m" or "1m30s".
type Duration time.Duration

// String writes the duration as Go does ("30s").
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText writes the duration as String does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText reads a duration such as "30s".
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

func (d *Duration) decodeYAML(dec *decoder, n *yaml.Node, path string) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		dec.wrongType(n, path, `a duration such as "30s" or "2m"`)
		return
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		dec.r.addAt(n.Line, path, "%q is not a duration (write e.g. 30s, 2m)", n.Value)
		return
	}
	*d = Duration(v)
}

// JSONSchema describes Duration for editors.
func (Duration) JSONSchema() *jsonschema.Schema {
	return &jsonschema.Schema{Type: "string", Pattern: `^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`, Description: `A duration: "30s", "2m", "1m30s".`}
}
