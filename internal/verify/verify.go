// Package verify checks a host against a fleet file and reports each check
// as PASS, FAIL or SKIP with its evidence. This file holds the framework
// and the host's prerequisites: the hypervisor binaries, kernels and
// helpers the file's VMs need, so a missing binary is reported before a VM
// fails to start.
package verify

import (
	"fmt"
	"maps"
	"os/exec"
	"slices"
	"strings"

	"microvm.dev/microvm/internal/apitypes"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/vmm"
	"microvm.dev/microvm/internal/vmm/backends"
)

// Status is a check's outcome.
type Status = apitypes.CheckStatus

// Outcomes.
const (
	Pass = apitypes.Pass
	Fail = apitypes.Fail
	Skip = apitypes.Skip
)

// Result is one check's outcome with what it saw.
type Result = apitypes.CheckResult

// Check is one named check.
type Check struct {
	Name string
	Run  func() (Status, string)
}

// Run runs checks in order.
func Run(checks []Check) []Result {
	out := make([]Result, 0, len(checks))
	for _, c := range checks {
		st, ev := c.Run()
		out = append(out, Result{Name: c.Name, Status: st, Evidence: ev})
	}
	return out
}

// Failed counts the failed results.
func Failed(rs []Result) int {
	n := 0
	for _, r := range rs {
		if r.Status == Fail {
			n++
		}
	}
	return n
}

// LookPath finds an executable; tests replace it to stand in for a host.
type LookPath func(file string) (string, error)

// Prerequisites are the checks that the host has what cfg's VMs need with
// env: each hypervisor binary (for the guest architecture), each kernel
// (resolvable, and bootable by the VM's hypervisor), virtiofsd where the
// store is shared over virtiofs, mkfs.ext4 for volumes and block stores,
// nft, and cgroups where a VM has limits. look is exec.LookPath unless a
// test stands in for the host.
func Prerequisites(cfg *config.Config, env launch.Env, look LookPath) []Check {
	if look == nil {
		look = exec.LookPath
	}
	byBackend := map[string][]string{}
	var limited, withVolumes []string
	for _, vm := range cfg.VMs {
		byBackend[vm.Hypervisor] = append(byBackend[vm.Hypervisor], vm.Name)
		if vm.Limits != (config.Limits{}) {
			limited = append(limited, vm.Name)
		}
		if len(vm.Volumes) > 0 {
			withVolumes = append(withVolumes, vm.Name)
		}
	}
	arch := env.Arch
	if arch == "" {
		arch = vmm.HostArch()
	}
	var checks []Check
	for _, name := range slices.Sorted(maps.Keys(byBackend)) {
		vms := byBackend[name]
		b, err := backends.Get(name)
		if err != nil {
			continue // validation rejects unknown backends
		}
		bin := b.Binary(arch)
		checks = append(checks, Check{Name: "hypervisor " + name, Run: func() (Status, string) {
			p, err := look(bin)
			if err != nil {
				return Fail, fmt.Sprintf("%s is not installed (not in PATH), needed by %s: %s", bin, vmList(vms), b.Capabilities().Install)
			}
			return Pass, fmt.Sprintf("%s at %s for %s", bin, p, vmList(vms))
		}})
	}
	for _, vm := range cfg.VMs {
		checks = append(checks, Check{Name: "kernel of " + vm.Name, Run: func() (Status, string) {
			k, err := guest.ResolveKernel(vm.Kernel, arch, vmm.HostArch(), env.KernelCache)
			if err != nil {
				return Fail, err.Error()
			}
			b, err := backends.Get(vm.Hypervisor)
			if err != nil {
				return Fail, err.Error()
			}
			boot := env.BootKernel(k, b, arch)
			if err := b.CheckKernel(boot, arch); err != nil {
				return Fail, err.Error()
			}
			if boot != k.Image {
				return Pass, fmt.Sprintf("%s, booted as its PVH vmlinux %s (modules %s)", k.Image, boot, k.Modules)
			}
			return Pass, fmt.Sprintf("%s (modules %s)", k.Image, k.Modules)
		}})
	}
	for _, name := range slices.Sorted(maps.Keys(byBackend)) {
		b, err := backends.Get(name)
		if err != nil {
			continue
		}
		checks = append(checks, Check{Name: "store share for " + name, Run: func() (Status, string) {
			// By VM: a VM's store key may choose another share than the host's.
			var evidence []string
			for _, vm := range cfg.VMs {
				if vm.Hypervisor != name {
					continue
				}
				kind, err := env.ShareKind(b, vm)
				if err != nil {
					return Fail, err.Error()
				}
				if kind == vmm.ShareVirtiofs {
					kind += " (virtiofsd at " + launch.Virtiofsd() + ")"
				}
				evidence = append(evidence, vm.Name+": "+kind)
			}
			return Pass, strings.Join(evidence, "; ")
		}})
	}
	checks = append(checks, Check{Name: "mkfs.ext4", Run: func() (Status, string) {
		if len(withVolumes) == 0 && !usesBlock(cfg, env) {
			return Skip, "no VM has volumes or a block store"
		}
		p, err := look("mkfs.ext4")
		if err != nil {
			return Fail, "mkfs.ext4 is not installed (apt install e2fsprogs)"
		}
		return Pass, p
	}})
	checks = append(checks, Check{Name: "nftables", Run: func() (Status, string) {
		p, err := look("nft")
		if err != nil {
			return Fail, "nft is not installed (apt install nftables)"
		}
		return Pass, p
	}})
	checks = append(checks, Check{Name: "cgroups", Run: func() (Status, string) {
		if len(limited) == 0 {
			return Skip, "no VM has limits"
		}
		if env.Cgroups == nil {
			return Fail, fmt.Sprintf("%s set limits, but this host has no usable cgroups (cgroup v2 with cpu and memory, or the v1 cpu and memory hierarchies)", vmList(limited))
		}
		return Pass, fmt.Sprintf("cgroup v%d for %s", env.Cgroups.Version(), vmList(limited))
	}})
	return checks
}

func usesBlock(cfg *config.Config, env launch.Env) bool {
	for _, vm := range cfg.VMs {
		if b, err := backends.Get(vm.Hypervisor); err == nil {
			if kind, _ := env.ShareKind(b, vm); kind == vmm.ShareBlock {
				return true
			}
		}
	}
	return false
}

func vmList(vms []string) string {
	if len(vms) == 1 {
		return "VM " + vms[0]
	}
	return "VMs " + strings.Join(vms, ", ")
}
