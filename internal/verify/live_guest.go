package verify

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"microvm.dev/microvm/internal/config"
)

// guestChecks are what the VM's probe (one SSH session) reports: its
// hostname, vCPUs and memory, a read-only store, an ephemeral /var, its
// volumes, its reach (gateway, internet, DNS, not the metadata service)
// and its isolation from the other VMs.
func (l *live) guestChecks(vm *config.VM) []Check {
	cfg, name := l.f.Config, vm.Name
	var checks []Check
	checks = append(checks, Check{Name: name + " over SSH", Run: l.fact(name, func(m map[string]string) (Status, string) {
		memKB, _ := strconv.ParseInt(m["memkb"], 10, 64)
		wantKB := int64(vm.Memory) / 1024
		ev := fmt.Sprintf("hostname %s, %s vCPU, %d MiB", m["hostname"], m["nproc"], memKB/1024)
		if m["hostname"] != name || m["nproc"] != strconv.Itoa(vm.VCPU) || memKB > wantKB || memKB < wantKB*7/10 {
			return Fail, ev + fmt.Sprintf("; want hostname %s, %d vCPU, %s", name, vm.VCPU, vm.Memory)
		}
		return Pass, ev
	})})
	checks = append(checks, Check{Name: name + " store read-only", Run: l.fact(name, func(m map[string]string) (Status, string) {
		if m["store_write"] != "refused" {
			return Fail, "a write to /run/microvm/store succeeded"
		}
		return Pass, "writes to /run/microvm/store are refused"
	})})
	checks = append(checks, Check{Name: name + " /var ephemeral", Run: l.fact(name, func(m map[string]string) (Status, string) {
		// The image's own /var, on the root overlay whose upper layer is
		// in memory: reset to the image's content at every boot.
		if m["var"] != "" || m["root_upper"] != "upperdir=/run/microvm/rw/upper" {
			return Fail, fmt.Sprintf("/var is mounted %q on a root with %q, not on the root's in-memory overlay", m["var"], m["root_upper"])
		}
		return Pass, "/var is the image's, on the root overlay's in-memory upper layer"
	})})
	for _, v := range vm.Volumes {
		checks = append(checks, Check{Name: name + " volume " + v.Name, Run: l.fact(name, func(m map[string]string) (Status, string) {
			if m["mount "+v.MountPoint] != "ext4" {
				return Fail, fmt.Sprintf("%s is not mounted (found %q)", v.MountPoint, m["mount "+v.MountPoint])
			}
			return Pass, v.MountPoint + " is ext4"
		})})
	}
	checks = append(checks, Check{Name: name + " → gateway", Run: l.fact(name, func(m map[string]string) (Status, string) {
		return reachable(m["ping_gateway"], vm.Net.Gateway.String())
	})})
	if vm.Net.HasIPv6() {
		checks = append(checks, Check{Name: name + " → gateway (IPv6)", Run: l.fact(name, func(m map[string]string) (Status, string) {
			return reachable(m["ping_gateway6"], vm.Net.Gateway6.String())
		})})
	}
	checks = append(checks, Check{Name: name + " → internet", Run: l.fact(name, func(m map[string]string) (Status, string) {
		if l.gateway == "" {
			return Skip, "the host has no default gateway"
		}
		return reachable(m["ping_internet"], l.gateway+" (the host's default gateway, through NAT)")
	})})
	checks = append(checks, Check{Name: name + " DNS", Run: l.fact(name, func(m map[string]string) (Status, string) {
		return vmNames(cfg, vm, m)
	})})
	checks = append(checks, Check{Name: name + " → cloud metadata", Run: l.fact(name, func(m map[string]string) (Status, string) {
		if metadataAllowed(cfg, vm) {
			return Skip, "the file allows " + metadataAddr + " to this VM"
		}
		if got := m["metadata"]; got != "blocked" {
			return Fail, fmt.Sprintf("%s:80 is reachable from the VM (%s): its egress is not closed", metadataAddr, got)
		}
		return Pass, metadataAddr + " (the cloud metadata service) is unreachable"
	})})
	checks = append(checks, Check{Name: name + " isolation", Run: l.fact(name, func(m map[string]string) (Status, string) {
		return isolation(cfg, vm, m)
	})})
	return checks
}

// isolation checks what vm's probe (m) reached of the other VMs: none but
// the ports the file allows, over IPv4 and IPv6.
func isolation(cfg *config.Config, vm *config.VM, m map[string]string) (Status, string) {
	name := vm.Name
	var broken, allowedOK, notes []string
	v6 := 0
	for _, other := range cfg.VMs {
		if other.Name == name {
			continue
		}
		port := allowedPort(cfg, name, other.Name)
		targets := isolationTargets(vm, other)
		if len(targets) > 1 {
			v6++
		}
		for _, tg := range targets {
			got := m[tg.key]
			switch {
			case got == "":
				notes = append(notes, tg.key[3:]+": not probed")
			case port != 0 && got == "blocked":
				broken = append(broken, fmt.Sprintf("%s → %s:%d is allowed but blocked (%s)", name, other.Name, port, netip.AddrPortFrom(tg.addr, uint16(port))))
			case port != 0:
				if tg.addr == other.Net.Address {
					allowedOK = append(allowedOK, fmt.Sprintf("%s:%d", other.Name, port))
				}
			case got != "blocked":
				broken = append(broken, fmt.Sprintf("%s → %s (%s) is reachable (%s): isolation is broken", name, other.Name, netip.AddrPortFrom(tg.addr, 22), got))
			}
		}
	}
	if len(broken) > 0 {
		return Fail, strings.Join(broken, "; ")
	}
	ev := fmt.Sprintf("cannot reach the %d other VMs", len(cfg.VMs)-1-len(allowedOK))
	if v6 > 0 {
		ev += ", over IPv4 or IPv6"
	}
	if len(allowedOK) > 0 {
		ev += "; reaches allowed " + strings.Join(allowedOK, ", ")
	}
	if len(notes) > 0 {
		ev += "; " + strings.Join(notes, ", ")
	}
	return Pass, ev
}
