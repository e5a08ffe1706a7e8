package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Sibling verbs agree on their flags: a flag name two siblings define has
// the same shorthand and type on both; every verb under net takes -f; and
// every verb that checks a file against this machine (validate, plan,
// render) takes --offline. Before, render refused --offline and net
// teardown refused -f while their siblings took them.
func TestSiblingFlagsAgree(t *testing.T) {
	root := (&app{}).rootCommand()
	var walk func(c *cobra.Command, path string)
	walk = func(c *cobra.Command, path string) {
		type seen struct{ verb, shorthand, typ string }
		flags := map[string]seen{}
		for _, sub := range c.Commands() {
			if sub.Hidden || sub.Name() == "help" || sub.Name() == "completion" {
				continue
			}
			verb := strings.TrimSpace(path + " " + sub.Name())
			sub.LocalFlags().VisitAll(func(f *pflag.Flag) {
				if prev, ok := flags[f.Name]; ok && (prev.shorthand != f.Shorthand || prev.typ != f.Value.Type()) {
					t.Errorf("--%s: -%s %s on %q, but -%s %s on %q", f.Name, prev.shorthand, prev.typ, prev.verb, f.Shorthand, f.Value.Type(), verb)
				}
				flags[f.Name] = seen{verb, f.Shorthand, f.Value.Type()}
			})
			walk(sub, verb)
		}
	}
	walk(root, "")
	find := func(path ...string) *cobra.Command {
		c, _, err := root.Find(path)
		if err != nil {
			t.Fatalf("%v: %v", path, err)
		}
		return c
	}
	for _, sub := range find("net").Commands() {
		if sub.Flags().Lookup("file") == nil {
			t.Errorf("net %s takes no -f, while its siblings do", sub.Name())
		}
	}
	for _, verb := range []string{"validate", "plan", "render"} {
		if find(verb).Flags().Lookup("offline") == nil {
			t.Errorf("%s takes no --offline", verb)
		}
	}
	// And they run with them.
	for _, args := range [][]string{
		{"render", "nftables", "-f", reference, "--offline"},
		{"validate", "-f", reference, "--offline"},
		{"plan", "-f", reference, "--offline", "--state-dir", t.TempDir()},
	} {
		if code, _, errOut := runCLI(t, args...); code != 0 {
			t.Errorf("%v: exit %d: %s", args, code, errOut)
		}
	}
}

// A relative path flag is made absolute where the flags are read: the
// plan names the state directory it read as an absolute path.
func TestRelativePathFlagsAreMadeAbsolute(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI(t, "plan", "-f", reference, "--offline", "--state-dir", "no-such-state")
	if want := "(state " + filepath.Join(wd, "no-such-state") + ")"; code != 0 || !strings.Contains(out, want) {
		t.Fatalf("code %d, want %q in:\n%s%s", code, want, out, errOut)
	}
}
