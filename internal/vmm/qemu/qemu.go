// Package qemu builds the QEMU command line that runs a VM: direct kernel
// boot, no default devices, a QMP socket, the serial console to a file, the
// TAP by name, the store share over virtiofs or 9p and the volumes as
// virtio-blk disks with their names as serials. Under KVM on x86_64 it uses
// the minimal "microvm" machine with virtio-mmio devices; under TCG it uses
// q35 with PCI devices (the microvm machine does not boot under TCG); on
// aarch64 it uses "virt".
package qemu

import (
	"fmt"
	"strings"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/vmm"
)

// Binary is the QEMU executable for an architecture.
func Binary(arch string) string {
	if arch == vmm.ArchAArch64 {
		return "qemu-system-aarch64"
	}
	return "qemu-system-x86_64"
}

// Command returns the argv (binary first) that runs vm with l.
func Command(vm *config.VM, l vmm.Launch) []string {
	mmio := l.Arch == vmm.ArchX86_64 && l.KVM
	dev := func(pci string) string {
		if mmio {
			return strings.TrimSuffix(pci, "-pci") + "-device"
		}
		return pci
	}
	args := []string{Binary(l.Arch), "-name", "guest=" + vm.Name + ",debug-threads=on"}

	accel, cpu := "tcg", "max"
	if l.KVM {
		accel, cpu = "kvm", "host"
	}
	virtiofs := false
	for _, s := range l.Shares {
		if s.VirtiofsSocket != "" {
			virtiofs = true
		}
	}
	var machine, console string
	switch {
	case l.Arch == vmm.ArchAArch64:
		machine, console = "virt,gic-version=max,accel="+accel, "ttyAMA0"
	case mmio:
		machine, console = "microvm,accel=kvm,pit=off,pic=off,rtc=off,isa-serial=on,x-option-roms=off", "ttyS0"
	default:
		machine, console = "q35,accel=tcg", "ttyS0"
	}
	if virtiofs {
		// vhost-user needs guest memory that virtiofsd can map: a shared memfd.
		machine += ",memory-backend=mem"
		args = append(args, "-object", fmt.Sprintf("memory-backend-memfd,id=mem,size=%dM,share=on", vm.Memory.MiB()))
	}
	args = append(args, "-machine", machine)
	args = append(args,
		"-cpu", cpu,
		"-smp", fmt.Sprint(vm.VCPU),
		"-m", fmt.Sprintf("%dM", vm.Memory.MiB()),
		"-nodefaults", "-no-user-config", "-no-reboot",
		"-display", "none",
		"-kernel", l.Kernel,
		"-initrd", l.Initrd,
		"-append", KernelCmdline(vm, console),
		// A socket for `microvm console`, logging everything to the console
		// log whether or not a client is connected.
		"-chardev", "socket,id=console,path="+l.ConsoleSocket+",server=on,wait=off,logfile="+l.ConsoleLog+",logappend=off",
		"-serial", "chardev:console",
		"-qmp", "unix:"+l.ControlSocket+",server=on,wait=off",
	)

	netdev := "tap,id=net0,ifname=" + vm.Net.TAP + ",script=no,downscript=no"
	if l.VHostNet {
		netdev += ",vhost=on"
	}
	args = append(args,
		"-netdev", netdev,
		"-device", dev("virtio-net-pci")+",netdev=net0,mac="+vm.Net.MAC,
	)
	for i, s := range l.Shares {
		if s.VirtiofsSocket != "" {
			id := fmt.Sprintf("fs%d", i)
			args = append(args,
				"-chardev", "socket,id="+id+",path="+s.VirtiofsSocket,
				"-device", dev("vhost-user-fs-pci")+",chardev="+id+",tag="+s.Tag)
			continue
		}
		id := fmt.Sprintf("fs%d", i)
		args = append(args,
			"-fsdev", "local,id="+id+",path="+s.Path+",security_model=none,readonly=on",
			"-device", dev("virtio-9p-pci")+",fsdev="+id+",mount_tag="+s.Tag)
	}
	for i, d := range l.Disks {
		id := fmt.Sprintf("vol%d", i)
		args = append(args,
			"-drive", "file="+d.Path+",format=raw,if=none,id="+id+",cache=none,aio=threads,discard=unmap",
			"-device", dev("virtio-blk-pci")+",drive="+id+",serial="+d.Name)
	}
	args = append(args, "-device", dev("virtio-rng-pci"))
	return args
}

// KernelCmdline is the guest kernel's command line.
func KernelCmdline(vm *config.VM, console string) string {
	return strings.Join([]string{
		"console=" + console,
		"panic=-1", "reboot=t", "quiet", "loglevel=4",
		// A loaded host can starve an emulated guest long enough to fail the
		// kernel's IO-APIC timer check (it panicked with 50 guests booting
		// on 2 cores); virtual machines do not need that check.
		"no_timer_check",
		"microvm.name=" + vm.Name,
	}, " ")
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
