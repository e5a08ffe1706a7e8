// Package backends is the registry of hypervisor backends: it maps the
// names a VM may give in vms.*.hypervisor (config.Hypervisors) to their
// vmm.Backend implementations.
package backends

import (
	"fmt"
	"strings"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/vmm"
	"microvm.dev/microvm/internal/vmm/cloudhypervisor"
	"microvm.dev/microvm/internal/vmm/firecracker"
	"microvm.dev/microvm/internal/vmm/qemu"
)

// All returns every backend, in the order of config.Hypervisors.
func All() []vmm.Backend {
	return []vmm.Backend{qemu.Backend{}, cloudhypervisor.Backend{}, firecracker.Backend{}}
}

// Get returns the backend called name; "" is the default (config.DefaultHypervisor).
func Get(name string) (vmm.Backend, error) {
	if name == "" {
		name = config.DefaultHypervisor
	}
	for _, b := range All() {
		if b.Name() == name {
			return b, nil
		}
	}
	return nil, fmt.Errorf("unknown hypervisor %q (%s)", name, strings.Join(config.Hypervisors(), ", "))
}
