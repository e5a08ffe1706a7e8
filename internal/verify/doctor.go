package verify

import (
	"fmt"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"

	"microvm.dev/microvm/internal/cgroup"
	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/gitsync"
	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/vmm"
	"microvm.dev/microvm/internal/vmm/qemu"
	"microvm.dev/microvm/internal/vmmuser"
)

// Doctor are the host's prerequisites independent of any file: KVM, the
// hypervisors' unprivileged user, TUN,
// vhost-net, nftables, cgroups, virtiofsd, QEMU, mkfs.ext4 and a guest
// kernel, each failing one with the fix. KVM and vhost-net only warn (as
// SKIP): without them VMs run, emulated and slower.
func Doctor(env launch.Env, look LookPath) []Check {
	if look == nil {
		look = exec.LookPath
	}
	access := func(path string) error { return unix.Access(path, unix.R_OK|unix.W_OK) }
	arch := env.Arch
	if arch == "" {
		arch = vmm.HostArch()
	}
	return []Check{
		{Name: "kvm", Run: func() (Status, string) {
			if err := access("/dev/kvm"); err != nil {
				return Skip, fmt.Sprintf("/dev/kvm is not usable (%v): VMs run under TCG emulation, several times slower; fix: enable virtualization in the firmware, then modprobe kvm_intel (or kvm_amd)", err)
			}
			if !vmm.HardwareKVM() {
				return Skip, "/dev/kvm is not hardware virtualization (no kvm_intel or kvm_amd; a paravirtual KVM such as kvm_pvm boots only kernels built for it): VMs run under TCG emulation"
			}
			return Pass, "/dev/kvm is usable"
		}},
		{Name: "vmm user", Run: func() (Status, string) {
			u := env.VMMUser
			if u == nil {
				return Skip, "hypervisors run as root; fix: " + vmmuser.CreateCommand + " (they then run as it, without capabilities)"
			}
			jail := ", each shut into a root of its own (its VM's files only) in new mount and PID namespaces"
			if env.Self == "" {
				jail = ", not confined (--vmm-confine off)"
			}
			if u.IDs == nil {
				return Pass, fmt.Sprintf("hypervisors run as %s (uid %d) without capabilities%s, all as that one user; for one identity per VM: usermod --add-subuids 1879048192-1879113727 --add-subgids 1879048192-1879113727 %s", u.Name, u.UID, jail, u.Name)
			}
			return Pass, fmt.Sprintf("hypervisors run without capabilities%s, each VM's as its own uid from %s's range %d-%d", jail, u.Name, u.IDs.UID+1, u.IDs.UID+u.IDs.Count-1)
		}},
		{Name: "tun", Run: func() (Status, string) {
			if err := access("/dev/net/tun"); err != nil {
				return Fail, fmt.Sprintf("/dev/net/tun: %v; fix: modprobe tun", err)
			}
			return Pass, "/dev/net/tun is usable"
		}},
		{Name: "vhost-net", Run: func() (Status, string) {
			if err := access("/dev/vhost-net"); err != nil {
				return Skip, fmt.Sprintf("/dev/vhost-net is not usable (%v): networking runs in QEMU, slower; fix: modprobe vhost_net", err)
			}
			return Pass, "/dev/vhost-net is usable"
		}},
		{Name: "nftables", Run: func() (Status, string) {
			p, err := look("nft")
			if err != nil {
				return Fail, "nft is not installed; fix: apt install nftables"
			}
			if out, err := exec.Command(p, "list", "tables").CombinedOutput(); err != nil {
				return Fail, fmt.Sprintf("nft cannot talk to the kernel: %v %s; fix: modprobe nf_tables", err, strings.TrimSpace(string(out)))
			}
			return Pass, p
		}},
		{Name: "cgroups", Run: func() (Status, string) {
			m, err := cgroup.Detect(cgroup.DefaultRoot)
			if err != nil {
				return Skip, err.Error() + ": VM limits cannot be enforced; fix: mount cgroup2 with the cpu and memory controllers"
			}
			return Pass, fmt.Sprintf("cgroup v%d", m.Version())
		}},
		{Name: "qemu", Run: func() (Status, string) {
			bin := qemu.Binary(arch)
			p, err := look(bin)
			if err != nil {
				return Fail, fmt.Sprintf("%s is not installed; fix: apt install qemu-system-x86 (qemu-system-arm for aarch64)", bin)
			}
			return Pass, p
		}},
		{Name: "virtiofsd", Run: func() (Status, string) {
			if p := launch.Virtiofsd(); p != "" {
				return Pass, p
			}
			return Skip, "no virtiofsd: QEMU shares the store over 9p, cloud-hypervisor cannot run; fix: apt install virtiofsd (or qemu-system-common on Debian 12)"
		}},
		{Name: "mkfs.ext4", Run: func() (Status, string) {
			p, err := look("mkfs.ext4")
			if err != nil {
				return Fail, "mkfs.ext4 is not installed (volumes need it); fix: apt install e2fsprogs"
			}
			return Pass, p
		}},
		{Name: "guest kernel", Run: func() (Status, string) {
			k, err := guest.ResolveKernel(config.Kernel{}, arch, vmm.HostArch(), env.KernelCache)
			if err != nil {
				return Fail, err.Error() + "; fix: scripts/fetch-kernel.sh (or set kernel: {path, modules} per VM)"
			}
			return Pass, k.Image
		}},
	}
}

// GitKnownHosts checks that the known hosts file (the daemon's
// --git-known-hosts) holds a key for the host of the SSH remote url: with
// none, every fetch is refused as an unknown host.
func GitKnownHosts(url, file string) Check {
	return Check{Name: "git known hosts", Run: func() (Status, string) {
		if url == "" {
			return Fail, "--git-known-hosts needs the daemon's --git-url to check against"
		}
		known, host, err := gitsync.HostKnown(file, url)
		switch {
		case err != nil:
			return Fail, fmt.Sprintf("%s: %v", file, err)
		case !known:
			return Fail, fmt.Sprintf("%s has no key for %s: every fetch will be refused; fix: ssh-keyscan -p PORT HOST >> %s (check the key's fingerprint with the forge)", file, host, file)
		}
		return Pass, fmt.Sprintf("%s holds %s's host key", file, host)
	}}
}
