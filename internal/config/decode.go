package config

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// maxNodes bounds the work of decoding one file, so aliases that expand
// exponentially ("billion laughs") are refused instead of exhausting memory.
const maxNodes = 200_000

// yamlDecoder is implemented by types that read themselves from a node
// (sizes, ports, the kernel choice).
type yamlDecoder interface {
	decodeYAML(d *decoder, n *yaml.Node, path string)
}

// decoder maps a yaml.Node tree onto Go values strictly: unknown keys,
// duplicate keys and wrong types are problems, and decoding goes on after
// each so that one run reports all of them.
type decoder struct {
	r     *reporter
	nodes int
}

var yamlDecoderType = reflect.TypeFor[yamlDecoder]()

// decodeFile parses data and decodes the single document in it into out.
func decodeFile(r *reporter, data []byte, out any) {
	if len(strings.TrimSpace(string(data))) == 0 {
		r.addAt(0, "", "the file is empty; it needs at least a vms: section")
		return
	}
	var root yaml.Node
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	if err := dec.Decode(&root); errors.Is(err, io.EOF) {
		r.addAt(0, "", "the file is empty; it needs at least a vms: section")
		return
	} else if err != nil {
		r.addAt(yamlErrorLine(err), "", "not valid YAML: %s", trimYAMLError(err))
		return
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		r.addAt(extra.Line, "", "the file holds more than one YAML document; put everything in one")
		return
	}
	d := &decoder{r: r}
	n := &root
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			r.addAt(0, "", "the file is empty; it needs at least a vms: section")
			return
		}
		n = n.Content[0]
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		r.addAt(n.Line, "", "the file is empty; it needs at least a vms: section")
		return
	}
	d.decode(n, reflect.ValueOf(out).Elem(), "")
}

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	d.nodes++
	if d.nodes > maxNodes {
		if d.nodes == maxNodes+1 {
			d.r.addAt(n.Line, "", "the document expands to more than %d nodes through aliases; refusing it", maxNodes)
		}
		return
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			d.r.addAt(n.Line, path, "unresolved alias")
			return
		}
		d.decode(n.Alias, v, path)
		return
	}
	if path != "" {
		if _, seen := d.r.lines[path]; !seen {
			d.r.lines[path] = n.Line
		}
	}
	if v.CanAddr() && v.Addr().Type().Implements(yamlDecoderType) {
		v.Addr().Interface().(yamlDecoder).decodeYAML(d, n, path)
		return
	}
	isNull := n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
	switch v.Kind() {
	case reflect.Pointer:
		if isNull {
			return
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, v.Elem(), path)
	case reflect.Struct:
		if isNull {
			return
		}
		d.decodeStruct(n, v, path)
	case reflect.Map:
		if isNull {
			return
		}
		d.decodeMap(n, v, path)
	case reflect.Slice:
		if isNull {
			return
		}
		if n.Kind != yaml.SequenceNode {
			d.wrongType(n, path, "a list")
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			d.decode(c, s.Index(i), indexPath(path, i))
		}
		v.Set(s)
	case reflect.String:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
			d.wrongType(n, path, "a string")
			return
		}
		v.SetString(n.Value)
	case reflect.Int, reflect.Int64:
		var i int64
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&i) != nil {
			d.wrongType(n, path, "a whole number")
			return
		}
		v.SetInt(i)
	case reflect.Float64:
		var f float64
		tag := n.ShortTag()
		if n.Kind != yaml.ScalarNode || (tag != "!!float" && tag != "!!int") || n.Decode(&f) != nil {
			d.wrongType(n, path, "a number")
			return
		}
		v.SetFloat(f)
	case reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
			d.wrongType(n, path, "true or false")
			return
		}
		v.SetBool(b)
	default:
		panic(fmt.Sprintf("config: no YAML decoding for %s at %s", v.Type(), path))
	}
}

// mappingPairs checks that n is a mapping with unique scalar keys and calls
// fn for each key and value; it reports merge keys, which are not supported.
func (d *decoder) mappingPairs(n *yaml.Node, path, want string, fn func(key string, keyNode, val *yaml.Node)) {
	if n.Kind != yaml.MappingNode {
		d.wrongType(n, path, want)
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.r.addAt(k.Line, path, "a key must be a plain name, not a %s", kindName(k))
			continue
		}
		if k.ShortTag() == "!!merge" {
			d.r.addAt(k.Line, joinPath(path, "<<"), "YAML merge keys (<<) are not supported; use the defaults: section")
			continue
		}
		if first, dup := seen[k.Value]; dup {
			d.r.addAt(k.Line, joinPath(path, k.Value), "duplicate key %q (first defined on line %d)", k.Value, first)
			continue
		}
		seen[k.Value] = k.Line
		fn(k.Value, k, val)
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	fields := yamlFields(v.Type())
	d.mappingPairs(n, path, "a mapping of keys", func(key string, k, val *yaml.Node) {
		p := joinPath(path, key)
		idx, ok := fields[key]
		if !ok {
			d.r.addAt(k.Line, p, "unknown key %q%s", key, suggest(key, fields))
			return
		}
		d.r.lines[p] = k.Line
		d.decode(val, v.Field(idx), p)
	})
}

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value, path string) {
	if v.IsNil() {
		v.Set(reflect.MakeMap(v.Type()))
	}
	d.mappingPairs(n, path, "a mapping of names", func(key string, k, val *yaml.Node) {
		p := joinPath(path, key)
		d.r.lines[p] = k.Line
		elem := reflect.New(v.Type().Elem()).Elem()
		d.decode(val, elem, p)
		v.SetMapIndex(reflect.ValueOf(key).Convert(v.Type().Key()), elem)
	})
}

func (d *decoder) wrongType(n *yaml.Node, path, want string) {
	d.r.addAt(n.Line, path, "expected %s, got %s", want, describe(n))
}

// yamlFields maps the yaml names of a struct's fields to their indexes.
func yamlFields(t reflect.Type) map[string]int {
	m := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name[:1]) + f.Name[1:]
		}
		m[name] = i
	}
	return m
}

// suggest names the closest known key, or lists them all when none is close.
func suggest(key string, fields map[string]int) string {
	names := make([]string, 0, len(fields))
	for n := range fields {
		names = append(names, n)
	}
	sort.Strings(names)
	best, bestDist := "", 3
	for _, n := range names {
		if dist := editDistance(strings.ToLower(key), strings.ToLower(n)); dist < bestDist {
			best, bestDist = n, dist
		}
	}
	if best != "" {
		return fmt.Sprintf("; did you mean %q?", best)
	}
	return "; known keys: " + strings.Join(names, ", ")
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func describe(n *yaml.Node) string {
	if n.Kind != yaml.ScalarNode {
		return "a " + kindName(n)
	}
	v := n.Value
	if len(v) > 40 {
		v = v[:40] + "…"
	}
	switch n.ShortTag() {
	case "!!str":
		return fmt.Sprintf("the string %q", v)
	case "!!int":
		return "the number " + v
	case "!!float":
		return "the number " + v
	case "!!bool":
		return "the boolean " + v
	case "!!null":
		return "nothing (null)"
	}
	return fmt.Sprintf("%q", v)
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.AliasNode:
		return "alias"
	case yaml.DocumentNode:
		return "document"
	}
	return "scalar"
}

// yamlErrorLine pulls "line N" out of a yaml.v3 syntax error, 0 if absent.
func yamlErrorLine(err error) int {
	var line int
	msg := err.Error()
	if i := strings.Index(msg, "line "); i >= 0 {
		fmt.Sscanf(msg[i+5:], "%d", &line)
	}
	return line
}

func trimYAMLError(err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if i := strings.Index(msg, "line "); i == 0 {
		if j := strings.Index(msg, ": "); j > 0 {
			msg = msg[j+2:]
		}
	}
	return msg
}
