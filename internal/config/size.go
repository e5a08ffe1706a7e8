package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/invopop/jsonschema"
	"go.yaml.in/yaml/v3"
)

// Size is a number of bytes written with a binary unit in the file: "512M",
// "64G", "1.5G", "2Ti". A bare number is bytes.
type Size int64

// Byte multiples used by Size.
const (
	KiB Size = 1 << 10
	MiB Size = 1 << 20
	GiB Size = 1 << 30
	TiB Size = 1 << 40
)

// ParseSize reads a size such as "512M", "64G", "1.5GiB" or "1048576".
// Units are binary (K = 1024) and case-insensitive; "B", "iB" suffixes are
// accepted.
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("empty size")
	}
	upper := strings.ToUpper(t)
	upper = strings.TrimSuffix(upper, "B")
	upper = strings.TrimSuffix(upper, "I")
	mult := Size(1)
	if n := len(upper); n > 0 {
		switch upper[n-1] {
		case 'K':
			mult = KiB
		case 'M':
			mult = MiB
		case 'G':
			mult = GiB
		case 'T':
			mult = TiB
		}
		if mult != 1 {
			upper = upper[:n-1]
		}
	}
	num := strings.TrimSpace(upper)
	if num == "" {
		return 0, fmt.Errorf("size %q has no number (write e.g. 512M or 64G)", s)
	}
	if i, err := strconv.ParseInt(num, 10, 64); err == nil {
		if i < 0 {
			return 0, fmt.Errorf("size %q is negative", s)
		}
		if i > math.MaxInt64/int64(mult) {
			return 0, fmt.Errorf("size %q is too large", s)
		}
		return Size(i) * mult, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("cannot read %q as a size (write e.g. 512M, 1G, 64G)", s)
	}
	if f < 0 {
		return 0, fmt.Errorf("size %q is negative", s)
	}
	v := f * float64(mult)
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return Size(v), nil
}

// String writes the size with the largest unit that divides it exactly.
func (s Size) String() string {
	switch {
	case s == 0:
		return "0"
	case s%TiB == 0:
		return fmt.Sprintf("%dT", s/TiB)
	case s%GiB == 0:
		return fmt.Sprintf("%dG", s/GiB)
	case s%MiB == 0:
		return fmt.Sprintf("%dM", s/MiB)
	case s%KiB == 0:
		return fmt.Sprintf("%dK", s/KiB)
	}
	return strconv.FormatInt(int64(s), 10)
}

// MiB returns the size in whole mebibytes, rounded down.
func (s Size) MiB() int64 { return int64(s / MiB) }

// MarshalText writes the size as String does.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a size as ParseSize does.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

func (s *Size) decodeYAML(d *decoder, n *yaml.Node, path string) {
	if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!str" && n.ShortTag() != "!!int" && n.ShortTag() != "!!float") {
		d.wrongType(n, path, "a size such as 512M or 64G")
		return
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		d.r.addAt(n.Line, path, "%v", err)
		return
	}
	*s = v
}

// JSONSchema describes Size for editors.
func (Size) JSONSchema() *jsonschema.Schema {
	return &jsonschema.Schema{
		OneOf: []*jsonschema.Schema{
			{Type: "string", Pattern: `^[0-9]+(\.[0-9]+)?\s*([KkMmGgTt]([iI]?[bB])?|[bB])?$`},
			{Type: "integer", Minimum: "0"},
		},
		Description: `A size with a binary unit: "512M", "1G", "64G". A bare number is bytes.`,
	}
}
