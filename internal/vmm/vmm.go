// Package vmm holds what every hypervisor backend shares: the inputs a VM is
// started from (kernel, initramfs, shares, volumes, sockets) and the facts
// about the host that choose between machine types.
package vmm

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"microvm.dev/microvm/internal/config"
)

// Architectures a host or guest may have, in QEMU's spelling.
const (
	ArchX86_64  = "x86_64"
	ArchAArch64 = "aarch64"
)

// HostArch is the architecture this binary runs on.
func HostArch() string {
	if runtime.GOARCH == "arm64" {
		return ArchAArch64
	}
	return ArchX86_64
}

// Share is a host directory given to the guest read-only.
type Share struct {
	// Tag is the mount tag the guest mounts it by.
	Tag string
	// Path is the host directory.
	Path string
	// VirtiofsSocket is the vhost-user socket of the virtiofsd serving the
	// share; empty means 9p unless Block is set.
	VirtiofsSocket string
	// Block is a read-only ext4 image of Path given as a disk instead
	// (ShareBlock), for backends without shared directories.
	Block string
}

// Kind is how the share reaches the guest (ShareVirtiofs, Share9p or ShareBlock).
func (s Share) Kind() string {
	switch {
	case s.Block != "":
		return ShareBlock
	case s.VirtiofsSocket != "":
		return ShareVirtiofs
	}
	return Share9p
}

// Disk is a volume image attached as a virtio block device.
type Disk struct {
	// Name is the volume name, given as the device serial.
	Name string
	// Path is the image file.
	Path string
}

// TemplateMemory is a guest memory kept in a file, for templates and
// their clones.
type TemplateMemory struct {
	// Path is the memory file (the template's).
	Path string
	// Clone maps it private and copy-on-write: the guest's writes stay its
	// own and never reach the file.
	Clone bool
	// Identity is the identity disk (IdentitySerial): the template's, read
	// by its guest until it is saved, then each clone's own, which the
	// guest finds changed when it resumes as that clone (guest.Identity).
	Identity string
}

// Launch is everything needed to start one VM besides its spec.
type Launch struct {
	// Arch is the guest (and host) architecture.
	Arch string
	// KVM says whether /dev/kvm is usable; without it QEMU uses TCG.
	KVM bool
	// Kernel is the kernel image to boot directly.
	Kernel string
	// Initrd is the initramfs (the shared base with the per-VM config appended).
	Initrd string
	// Shares are the read-only directory shares (the image store).
	Shares []Share
	// Disks are the data volumes in the VM's order.
	Disks []Disk
	// Modules is the read-only ext4 image of the kernel's module tree
	// (internal/moddisk), given as the last disk; "" gives none.
	Modules string
	// ConsoleLog is the file the serial console is written to.
	ConsoleLog string
	// ConsoleSocket is the unix socket an interactive console attaches to.
	ConsoleSocket string
	// ControlSocket is the VMM's control socket (QMP for QEMU).
	ControlSocket string
	// VHostNet says whether /dev/vhost-net may be used for the TAP.
	VHostNet bool
	// TAPFD, when not 0, is the descriptor number the hypervisor finds its
	// TAP open on (the launcher opens it as root and passes it), instead of
	// opening the TAP by name itself.
	TAPFD int
	// TSCKHz, when not 0 under TCG on x86_64, boots the minimal microvm
	// machine instead of q35: without a PIT to calibrate against or an HPET
	// to refine with, its guest needs the TSC's frequency (the host's, which
	// a TCG guest's TSC runs at) on its command line.
	TSCKHz int
	// Template, when set, keeps the guest's memory in a file: a template's
	// (shared: its saved state holds only its devices, the memory stays in
	// the file) or a clone's (the template's file mapped copy-on-write:
	// its resume loads only the devices, and its memory is the template's
	// until it writes).
	Template *TemplateMemory
	// TBSizeMiB, when not 0, is the size of QEMU's TCG translation cache
	// (-accel tcg,tb-size); 0 leaves QEMU's own (1 GiB).
	TBSizeMiB int
	// NoFreePageReporting gives the balloon device no free page reporting
	// (bench/cmd/densitybench measures what it gives back).
	NoFreePageReporting bool
}

// HostTSCKHz is the host's TSC frequency from /proc/cpuinfo where the CPU
// says its TSC is invariant and its frequency known (0 otherwise).
func HostTSCKHz() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil || !strings.Contains(string(b), " constant_tsc") || !strings.Contains(string(b), " tsc_known_freq") {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "cpu MHz"); ok {
			var mhz float64
			if _, err := fmt.Sscanf(strings.TrimLeft(v, " \t:"), "%f", &mhz); err == nil {
				return int(mhz * 1000)
			}
		}
	}
	return 0
}

// HardwareKVM says whether this host's /dev/kvm runs stock guests: on
// x86_64 only when it is backed by hardware virtualization (kvm_intel or
// kvm_amd loaded). Other providers, such as the paravirtual kvm_pvm of some
// nested cloud machines, boot only kernels built for them, so VMs there
// are emulated (TCG) instead.
func HardwareKVM() bool {
	if _, err := os.Stat("/dev/kvm"); err != nil {
		return false
	}
	if HostArch() != ArchX86_64 {
		return true
	}
	for _, m := range []string{"kvm_intel", "kvm_amd"} {
		if _, err := os.Stat(filepath.Join("/sys/module", m)); err == nil {
			return true
		}
	}
	return false
}

// KernelCmdline is the guest kernel's command line: the console device, no
// reboot (a guest reboot ends the VMM; the daemon restarts it), the VM's
// name for microvm-init, backend-specific extras, and the VM's own
// kernelParams last (validation refuses those that would undo microvm's).
func KernelCmdline(vm *config.VM, console string, extra ...string) string {
	return strings.Join(slices.Concat([]string{
		"console=" + console,
		"panic=-1", "reboot=t", "quiet", "loglevel=4",
		// A loaded host can starve an emulated guest long enough to fail the
		// kernel's IO-APIC timer check (it panicked with 50 guests booting
		// on 2 cores); virtual machines do not need that check.
		"no_timer_check",
		"microvm.name=" + vm.Name,
	}, extra, vm.KernelParams), " ")
}

// SerialConsole is the guest's serial console device on arch.
func SerialConsole(arch string) string {
	if arch == ArchAArch64 {
		return "ttyAMA0"
	}
	return "ttyS0"
}

// ShellQuote renders argv as one shell command line, quoting where needed.
func ShellQuote(argv []string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		if a != "" && !strings.ContainsAny(a, " \t\n'\"\\$`!*?[]{}()<>|&;#~") {
			out[i] = a
			continue
		}
		out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(out, " ")
}
