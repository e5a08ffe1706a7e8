package config

import (
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// The NixOS module (nix/module.nix) mirrors the file's keys. There is no
// Nix on this machine, so the module is checked two ways: every key of the
// file must have its option (by name, in the module's text), and, where
// nix-instantiate exists, the module must parse.
func TestNixModuleMirrorsTheFile(t *testing.T) {
	src, err := os.ReadFile("../../nix/module.nix")
	if err != nil {
		t.Fatal(err)
	}
	text := string(src)
	keys := func(v any) []string {
		var out []string
		rt := reflect.TypeOf(v)
		for i := range rt.NumField() {
			tag := strings.Split(rt.Field(i).Tag.Get("yaml"), ",")[0]
			if tag != "" && tag != "-" {
				out = append(out, tag)
			}
		}
		return out
	}
	for _, k := range append(append(append(keys(VMSpec{}), keys(Host{})...), keys(Volume{})...), keys(File{})...) {
		if !regexp.MustCompile(`\b` + regexp.QuoteMeta(k) + ` = mkOption`).MatchString(text) {
			t.Errorf("nix/module.nix has no option for the key %q", k)
		}
	}
	nix, err := exec.LookPath("nix-instantiate")
	if err != nil {
		t.Log("no Nix on this machine: the module was checked by its option names only")
		return
	}
	if out, err := exec.Command(nix, "--parse", "../../nix/module.nix").CombinedOutput(); err != nil {
		t.Errorf("nix-instantiate --parse: %v\n%s", err, out)
	}
}
