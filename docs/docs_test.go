// Package docs holds the checks of the documentation against the code:
// a page that names a package, a file or a function is kept true by a
// test here.
package docs

import (
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
