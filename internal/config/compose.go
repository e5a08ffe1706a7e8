package config

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ParseWith is Parse of the file with more VMs added to its vms: each
// extra entry is a VM's entry as the file would hold it (YAML or JSON),
// validated with the file's defaults and against its other VMs, as if it
// were written there. The file's own problems come first, with its lines;
// a problem of the composition has no line (it is about a VM added here,
// or one whose name the file uses too). The config's Source is the file
// alone.
func ParseWith(name string, file []byte, extra map[string][]byte, opts Options) (*Config, error) {
	cfg, err := Parse(name, file, opts)
	if err != nil || len(extra) == 0 {
		return cfg, err
	}
	var ps Problems
	for _, n := range slices.Sorted(maps.Keys(extra)) {
		if cfg.VM(n) != nil {
			ps = append(ps, Problem{File: name, Path: "vms." + n, Message: "a VM of this name was put through the daemon's API (PUT /v1/vms/" + n + "); remove one of them"})
		}
	}
	if len(ps) > 0 {
		return nil, ps
	}
	union, err := compose(file, extra)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	all, err := Parse(name, union, opts)
	var ups Problems
	if errors.As(err, &ups) {
		for i := range ups {
			ups[i].Line = 0
		}
		return nil, ups
	}
	if err != nil {
		return nil, err
	}
	all.Source = file
	return all, nil
}

// ParseEntry checks that data is one VM's entry (a YAML or JSON mapping),
// and returns it as YAML.
func ParseEntry(data []byte) ([]byte, error) {
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("a VM's entry is a YAML or JSON mapping of its keys: %w", err)
	}
	if m == nil {
		m = map[string]any{}
	}
	out, err := yaml.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("a VM's entry: %w", err)
	}
	return out, nil
}

// compose is the file with the extra VMs added to its vms.
func compose(file []byte, extra map[string][]byte) ([]byte, error) {
	var doc map[string]any
	if err := yaml.Unmarshal(file, &doc); err != nil {
		return nil, err
	}
	if doc == nil {
		doc = map[string]any{}
	}
	vms, _ := doc["vms"].(map[string]any)
	if vms == nil {
		vms = map[string]any{}
	}
	for n, e := range extra {
		var entry any
		if err := yaml.Unmarshal(e, &entry); err != nil {
			return nil, fmt.Errorf("VM %s put through the API: %w", n, err)
		}
		vms[n] = entry
	}
	doc["vms"] = vms
	return yaml.Marshal(doc)
}

// Entry is the VM name's own entry in file (its keys as written, defaults
// not merged), as PUT /v1/vms/{name} takes it; host, when it names one, is
// set to host.
func Entry(file []byte, name, host string) ([]byte, error) {
	var doc struct {
		VMs map[string]map[string]any `yaml:"vms"`
	}
	if err := yaml.Unmarshal(file, &doc); err != nil {
		return nil, err
	}
	e, ok := doc.VMs[name]
	if !ok {
		return nil, fmt.Errorf("no VM %s in the file", name)
	}
	if e == nil {
		e = map[string]any{}
	}
	if _, ok := e["host"]; ok {
		e["host"] = host
	}
	return yaml.Marshal(e)
}

// WithoutVMs is file with the VMs names left out (those of other hosts,
// or moved to them), and the network's allow rules and forwards that name
// them.
func WithoutVMs(file []byte, names []string) ([]byte, error) {
	if len(names) == 0 {
		return file, nil
	}
	var doc map[string]any
	if err := yaml.Unmarshal(file, &doc); err != nil {
		return nil, err
	}
	gone := map[string]bool{}
	for _, n := range names {
		gone[n] = true
	}
	vms, _ := doc["vms"].(map[string]any)
	for n := range gone {
		delete(vms, n)
	}
	if netw, ok := doc["network"].(map[string]any); ok {
		keep := func(key string, names func(map[string]any) []string) {
			list, ok := netw[key].([]any)
			if !ok {
				return
			}
			netw[key] = slices.DeleteFunc(list, func(e any) bool {
				m, _ := e.(map[string]any)
				return slices.ContainsFunc(names(m), func(n string) bool { return gone[n] })
			})
		}
		str := func(v any) string { s, _ := v.(string); return s }
		keep("allow", func(m map[string]any) []string { return []string{str(m["from"]), str(m["to"])} })
		keep("forwards", func(m map[string]any) []string {
			vm, _, _ := strings.Cut(str(m["to"]), ":")
			return []string{vm}
		})
	}
	return yaml.Marshal(doc)
}
