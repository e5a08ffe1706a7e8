// Package testutil holds helpers shared by tests: golden files and
// running a command inside a private, throwaway network namespace.
package testutil

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files with the current output")

// Golden compares got with testdata/<name>; with -update it rewrites the file.
func Golden(t *testing.T, name string, got []byte) {
	t.Helper()
	GoldenPath(t, filepath.Join("testdata", name), got)
}

// GoldenPath compares got with the file at path; with -update it rewrites it.
func GoldenPath(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run with -update to create it): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (run with -update if the change is intended)\n--- got ---\n%s\n--- want ---\n%s", path, got, want)
	}
}

// RequireRoot skips the test when not running as root. CI runs as root, so
// these tests run there.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces); CI runs it as root")
	}
}

// RequireCommand fails the test when a command the project installs is
// missing: a missing tool is a broken setup, not a reason to skip.
func RequireCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed (.ci/run installs it): %v", name, err)
	}
	return p
}

// InNewNetns runs argv in a fresh network namespace that disappears when the
// command exits, so nothing it does touches the machine's own network.
func InNewNetns(t *testing.T, stdin []byte, argv ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command("unshare", append([]string{"--net", "--"}, argv...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	return cmd.CombinedOutput()
}

// Indent puts prefix before every line of s (a trailing newline dropped),
// as for a YAML block scalar.
func Indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return prefix + strings.Join(lines, "\n"+prefix)
}
