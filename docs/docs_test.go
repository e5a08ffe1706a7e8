// Package docs holds the checks of the documentation against the code:
// a page that names a package, a file or a function is kept true by a
// test here.
package docs

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"unicode"
)

// architecture.md names every package of the module, and each function
// its "In one hop" table names is in the file it names.
func TestArchitectureNamesTheCode(t *testing.T) {
	page, err := os.ReadFile("architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(page)
	out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "list", "../internal/...", "../cmd/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		rel := strings.TrimPrefix(pkg, "microvm.dev/microvm/")
		if !regexp.MustCompile(`(^|[\s,(])` + regexp.QuoteMeta(rel) + `([\s,)]|$)`).MatchString(text) {
			t.Errorf("architecture.md does not name the package %s", rel)
		}
	}
	_, hop, ok := strings.Cut(text, "## In one hop")
	if !ok {
		t.Fatal(`architecture.md has no "In one hop" section`)
	}
	hop, _, _ = strings.Cut(hop, "\n## ")
	row := regexp.MustCompile("(?m)^\\|[^|]+\\| `([^`]+\\.go)`: `(\\w+)`")
	rows := row.FindAllStringSubmatch(hop, -1)
	if len(rows) < 5 {
		t.Fatalf("the one-hop table has %d rows naming a file and a function", len(rows))
	}
	for _, r := range rows {
		if !declares(t, filepath.Join("..", r[1]), r[2]) {
			t.Errorf("architecture.md: %s has no function %s", r[1], r[2])
		}
	}
}

// declares says whether the Go file at path declares the function or
// method name.
func declares(t *testing.T, path, name string) bool {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
	if err != nil {
		t.Errorf("architecture.md names %s: %v", path, err)
		return true
	}
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == name {
			return true
		}
	}
	return false
}

// configuration.md documents every key of the file's schema
// (infra.schema.json, generated from the Go types), and documents no key
// the schema lacks: each key of an object of the schema is named in the
// first column of a table of the page (as itself or a dotted path through
// it, "tailscale.port"), and each name there is a key of the schema.
func TestConfigurationNamesEveryKey(t *testing.T) {
	var schema struct {
		Defs map[string]json.RawMessage `json:"$defs"`
	}
	b, err := os.ReadFile("infra.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &schema); err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{} // key → the object it is a key of
	for def, raw := range schema.Defs {
		schemaKeys(raw, def, keys)
	}
	page, err := os.ReadFile("configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	// A key is named in the first column ("tailscale.port", "allow:
	// [{from, to, ports}]"), or as an object's keys in the second, its
	// type ("{tcp: PORT} or {http: PORT, path}").
	documented := map[string]bool{}
	code := regexp.MustCompile("`([^`]+)`")
	objectKeys := regexp.MustCompile(`[{,]\s*([A-Za-z][A-Za-z0-9]*)`)
	for _, line := range strings.Split(string(page), "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cols := strings.Split(line, "|")
		for _, m := range code.FindAllStringSubmatch(cols[1], -1) {
			name, rest, _ := strings.Cut(m[1], ":")
			for _, part := range strings.Split(strings.TrimSpace(name), ".") {
				documented[part] = true
				if _, ok := keys[part]; !ok && !strings.ContainsAny(part, "<>") {
					t.Errorf("configuration.md documents %q (in %q), which the schema has no key for", part, m[1])
				}
			}
			for _, k := range objectKeys.FindAllStringSubmatch(rest, -1) {
				documented[k[1]] = true
			}
		}
		if len(cols) > 3 {
			for _, m := range code.FindAllStringSubmatch(cols[2], -1) {
				for _, k := range objectKeys.FindAllStringSubmatch(m[1], -1) {
					documented[k[1]] = true
				}
			}
		}
	}

	for key, def := range keys {
		if !documented[key] {
			t.Errorf("configuration.md does not document %s's key %q", def, key)
		}
	}
}

// schemaKeys adds the property names of the schema object raw (and of the
// objects nested in it) to keys, each with where it is.
func schemaKeys(raw json.RawMessage, where string, keys map[string]string) {
	var node struct {
		Properties map[string]json.RawMessage `json:"properties"`
		Items      json.RawMessage            `json:"items"`
		OneOf      []json.RawMessage          `json:"oneOf"`
	}
	if json.Unmarshal(raw, &node) != nil {
		return
	}
	for k, v := range node.Properties {
		keys[k] = where
		schemaKeys(v, where+"."+k, keys)
	}
	if node.Items != nil {
		schemaKeys(node.Items, where, keys)
	}
	for _, o := range node.OneOf {
		schemaKeys(o, where, keys)
	}
}

// Every figure of the README (a time or a size: "16 s", "20 MB") is in a
// paragraph that links the docs/benchmarks.md section that measured it,
// and that section exists.
func TestReadmeFiguresNameTheirBenchmark(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	bench, err := os.ReadFile("benchmarks.md")
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, line := range strings.Split(string(bench), "\n") {
		if h, ok := strings.CutPrefix(line, "## "); ok {
			anchors[anchor(h)] = true
		}
	}
	figure := regexp.MustCompile(`\b\d+(\.\d+)?\s?(ms|s|min|MB|MiB|GB|GiB)\b`)
	link := regexp.MustCompile(`benchmarks\.md#([a-z0-9-]+)`)
	for i, para := range strings.Split(string(readme), "\n\n") {
		if !figure.MatchString(para) {
			continue
		}
		links := link.FindAllStringSubmatch(para, -1)
		if len(links) == 0 {
			t.Errorf("README paragraph %d has %q but links no docs/benchmarks.md section:\n%s", i+1, figure.FindString(para), para)
		}
		for _, l := range links {
			if !anchors[l[1]] {
				t.Errorf("README links benchmarks.md#%s, which is no section there", l[1])
			}
		}
	}
}

// anchor is the link anchor GitHub makes of a heading.
func anchor(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}
