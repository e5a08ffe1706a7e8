package config

import (
	"errors"
	"testing"
)

// A VM added to a file is validated as if the file held it: with the
// file's defaults and against its VMs; the file's own problems keep their
// lines, the composition's have none; the config's Source is the file.
func TestParseWith(t *testing.T) {
	file := []byte("defaults: { memory: 256M }\nvms:\n  a: { index: 1 }\n")
	entry, err := ParseEntry([]byte(`{"index": 2, "vcpu": 2}`))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseWith("f.yaml", file, map[string][]byte{"b": entry}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if b := cfg.VM("b"); b == nil || b.Memory != 256*MiB || b.VCPU != 2 || cfg.VM("a") == nil || string(cfg.Source) != string(file) {
		t.Fatalf("composed: %+v", cfg.VMs)
	}
	var ps Problems
	if _, err := ParseWith("f.yaml", file, map[string][]byte{"a": entry}, Options{}); !errors.As(err, &ps) || ps[0].Path != "vms.a" {
		t.Errorf("a name of the file's: %v", err)
	}
	clash, _ := ParseEntry([]byte("index: 1\n"))
	if _, err := ParseWith("f.yaml", file, map[string][]byte{"b": clash}, Options{}); !errors.As(err, &ps) || ps[0].Line != 0 {
		t.Errorf("a subnet clash: %v", err)
	}
	if _, err := ParseWith("f.yaml", []byte("vms:\n  a: { memory: lots }\n"), map[string][]byte{"b": entry}, Options{}); !errors.As(err, &ps) || ps[0].Line != 2 {
		t.Errorf("the file's own problem: %v", err)
	}
	if _, err := ParseEntry([]byte("[1, 2]")); err == nil {
		t.Error("a list is a VM's entry")
	}
}
