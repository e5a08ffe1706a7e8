package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds arbitrary bytes to the decoder and validator. Whatever the
// input: no panic; a rejection is a non-empty Problems list of non-empty
// messages; an accepted file yields a config whose every VM is addressed.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("../../examples/*/*.yaml")
	more, _ := filepath.Glob("testdata/*.yaml")
	for _, p := range append(seeds, more...) {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("vms: { a: { index: 1, memory: 1G, ports: [80, \"53/udp\"] } }"))
	f.Add([]byte("vms: { a: { subnet: 192.168.0.0/30 }, b: { index: 2, kernel: { path: /k } } }\nnetwork: { forwards: [{ hostPort: 80, to: \"a:80\" }] }"))
	f.Add([]byte("a: &a [*a]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data, Options{HostCPUs: 4})
		if err != nil {
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("error is not Problems: %v", err)
			}
			if len(ps) == 0 {
				t.Fatal("empty Problems returned as an error")
			}
			for _, p := range ps {
				if p.Message == "" {
					t.Fatalf("problem without a message: %+v", p)
				}
			}
			if cfg != nil {
				t.Fatal("config returned with problems")
			}
			return
		}
		for _, vm := range cfg.VMs {
			n := vm.Net
			if !n.Subnet.IsValid() || !n.Subnet.Contains(n.Gateway) || !n.Subnet.Contains(n.Address) || n.MAC == "" {
				t.Fatalf("VM %s accepted with bad addressing: %+v", vm.Name, n)
			}
			if len(n.Bridge) > MaxIfNameLen || len(n.TAP) > MaxIfNameLen {
				t.Fatalf("VM %s accepted with interface names over the limit", vm.Name)
			}
			if vm.Memory < MinMemory || vm.VCPU < 1 || vm.VCPU > 4 {
				t.Fatalf("VM %s accepted with resources out of range: %+v", vm.Name, vm)
			}
			_ = vm.SpecHash()
		}
	})
}
