// Package qemu builds the QEMU command line that runs a VM: direct kernel
// boot, no default devices, a QMP socket, the serial console to a file, the
// TAP by name, the store share over virtiofs or 9p and the volumes as
// virtio-blk disks with their names as serials. On x86_64 it uses the
// minimal "microvm" machine with virtio-mmio devices: under KVM, and under
// TCG for a PVH kernel when the host's TSC frequency is known (the guest
// needs it given: the machine has no PIT calibration or HPET to refine
// with); q35 with PCI devices otherwise. On aarch64 it uses "virt".
package qemu

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/vmm"
)

// Backend is QEMU as a vmm.Backend.
type Backend struct{}

// Name is config.HypervisorQEMU.
func (Backend) Name() string { return config.HypervisorQEMU }

// Binary is the QEMU executable for arch.
func (Backend) Binary(arch string) string { return Binary(arch) }

// ControlSocket is the QMP socket's file name.
const ControlSocket = "qmp.sock"

// Capabilities: the store over virtiofs when a virtiofsd is installed, else
// QEMU's own 9p, or a block image; QMP; the TAP as a descriptor (-netdev
// tap,fd=N); an interactive console socket whose log is appended to.
func (Backend) Capabilities() vmm.Capabilities {
	return vmm.Capabilities{
		PVH:                true,
		Shares:             []string{vmm.ShareVirtiofs, vmm.Share9p, vmm.ShareBlock},
		ControlSocket:      ControlSocket,
		TAPFromFD:          true,
		InteractiveConsole: true,
		AppendsConsole:     true,
		// QEMU 7.2 refuses to migrate vhost-user-fs, and 9p while mounted.
		SaveShares: []string{vmm.ShareBlock},
		LiveShares: []string{vmm.ShareBlock},
		Install:    "apt install qemu-system-x86 (or qemu-system-arm for aarch64 guests)",
	}
}

// Command is the QEMU command line.
func (Backend) Command(vm *config.VM, l vmm.Launch) (vmm.Command, error) {
	return vmm.Command{Argv: Command(vm, l)}, nil
}

// Shutdown presses the ACPI power button (attempt 0), then sends
// Ctrl-Alt-Del, which microvm-init also takes as a shutdown request.
func (Backend) Shutdown(l vmm.Launch, attempt int) error {
	if attempt == 0 {
		_, err := QMP(l.ControlSocket, "system_powerdown", nil, 5*time.Second)
		return err
	}
	cad := map[string]any{"keys": []map[string]string{
		{"type": "qcode", "data": "ctrl"}, {"type": "qcode", "data": "alt"}, {"type": "qcode", "data": "delete"}}}
	_, err := QMP(l.ControlSocket, "send-key", cad, 5*time.Second)
	return err
}

// Info is QMP's query-status and query-version.
func (Backend) Info(l vmm.Launch) (vmm.Info, error) {
	raw, err := QMP(l.ControlSocket, "query-status", nil, 5*time.Second)
	if err != nil {
		return vmm.Info{}, err
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return vmm.Info{}, fmt.Errorf("qmp query-status: %w", err)
	}
	info := vmm.Info{State: st.Status}
	if raw, err := QMP(l.ControlSocket, "query-version", nil, 5*time.Second); err == nil {
		var v struct {
			QEMU struct{ Major, Minor, Micro int } `json:"qemu"`
		}
		if json.Unmarshal(raw, &v) == nil {
			info.Version = fmt.Sprintf("%d.%d.%d", v.QEMU.Major, v.QEMU.Minor, v.QEMU.Micro)
		}
	}
	return info, nil
}

// CheckKernel accepts any kernel image QEMU's direct boot loads.
func (Backend) CheckKernel(string, string) error { return nil }

// DiskDevices is nil: disks carry serials.
func (Backend) DiskDevices(vmm.Launch) map[string]string { return nil }

// Binary is the QEMU executable for an architecture.
func Binary(arch string) string {
	if arch == vmm.ArchAArch64 {
		return "qemu-system-aarch64"
	}
	return "qemu-system-x86_64"
}

// Command returns the argv (binary first) that runs vm with l.
func Command(vm *config.VM, l vmm.Launch) []string {
	tcgMicrovm := l.Arch == vmm.ArchX86_64 && !l.KVM && l.TSCKHz > 0
	mmio := l.Arch == vmm.ArchX86_64 && (l.KVM || tcgMicrovm)
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
	var machine string
	switch {
	case l.Arch == vmm.ArchAArch64:
		machine = "virt,gic-version=max,accel=" + accel
	case tcgMicrovm:
		machine = MachineTCGMicrovm
	case mmio:
		machine = "microvm,accel=kvm,pit=off,pic=off,rtc=off,isa-serial=on,x-option-roms=off"
	default:
		machine = MachineTCGQ35
	}
	switch {
	case l.Template != nil:
		// The memory in a file: shared for a template (a save leaves it
		// there, x-ignore-shared), private for a clone (copy-on-write).
		share := "on"
		if l.Template.Clone {
			share = "off"
		}
		machine += ",memory-backend=mem"
		args = append(args, "-object", fmt.Sprintf("memory-backend-file,id=mem,size=%dM,mem-path=%s,share=%s", vm.Memory.MiB(), l.Template.Path, share))
	case virtiofs:
		// vhost-user needs guest memory that virtiofsd can map: a shared memfd.
		machine += ",memory-backend=mem"
		args = append(args, "-object", fmt.Sprintf("memory-backend-memfd,id=mem,size=%dM,share=on", vm.Memory.MiB()))
	}
	if !l.KVM && l.TBSizeMiB > 0 {
		// The translation cache's size is an -accel option, which QEMU
		// takes only without the machine's accel=.
		machine = strings.Replace(machine, ",accel=tcg", "", 1)
		args = append(args, "-accel", fmt.Sprintf("tcg,tb-size=%d", l.TBSizeMiB))
	}
	args = append(args, MachineArgs(machine)...)
	if mmio {
		// virtio-mmio devices are legacy (version 1) unless told otherwise,
		// and vhost-user backends (virtiofsd) serve only modern devices.
		args = append(args, "-global", "virtio-mmio.force-legacy=false")
	}
	args = append(args,
		"-cpu", cpu,
		"-smp", fmt.Sprint(vm.VCPU),
		"-m", fmt.Sprintf("%dM", vm.Memory.MiB()),
		"-nodefaults", "-no-user-config", "-no-reboot",
		// seccomp: no obsolete system calls, no privilege changes, no new
		// processes, no resource-control calls, whatever a guest makes of QEMU.
		"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
		"-display", "none",
		"-kernel", l.Kernel,
		"-initrd", l.Initrd,
		"-append", vmm.KernelCmdline(vm, vmm.SerialConsole(l.Arch), tscArgs(l)...),
		// A socket for `microvm console`, logging everything to the console
		// log whether or not a client is connected.
		"-chardev", "socket,id=console,path="+l.ConsoleSocket+",server=on,wait=off,logfile="+l.ConsoleLog+",logappend=on",
		"-serial", "chardev:console",
		"-qmp", "unix:"+l.ControlSocket+",server=on,wait=off",
	)

	netdev := "tap,id=net0,ifname=" + vm.Net.TAP + ",script=no,downscript=no"
	if l.TAPFD != 0 {
		netdev = "tap,id=net0,fd=" + strconv.Itoa(l.TAPFD)
	}
	if l.VHostNet {
		netdev += ",vhost=on"
	}
	args = append(args,
		"-netdev", netdev,
		"-device", dev("virtio-net-pci")+",netdev=net0,mac="+vm.Net.MAC,
	)
	for i, s := range l.Shares {
		if s.Block != "" {
			id := fmt.Sprintf("fs%d", i)
			args = append(args, readOnlyDisk(dev, id, s.Block, vmm.StoreSerial)...)
			continue
		}
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
	if l.Modules != "" {
		args = append(args, readOnlyDisk(dev, "modules", l.Modules, vmm.ModulesSerial)...)
	}
	if l.Template != nil {
		args = append(args, readOnlyDisk(dev, "identity", l.Template.Identity, vmm.IdentitySerial)...)
	}
	args = append(args, "-device", dev("virtio-rng-pci"),
		// Free page reporting: the guest hands the pages it frees back to
		// the host (QEMU discards them, also from the shared memfd
		// virtiofsd maps), so a VM holds what its guest uses, not every
		// page it ever touched. The host inflates it to take memory back
		// under pressure (host.reclaim); a guest short of memory deflates
		// it itself rather than kill a process.
		"-device", dev("virtio-balloon-pci")+balloonProps(l))
	return args
}

// balloonProps are the balloon device's properties: free page reporting
// (unless the bench turns it off), deflated on the guest's own OOM.
func balloonProps(l vmm.Launch) string {
	if l.NoFreePageReporting {
		return ",deflate-on-oom=on"
	}
	return ",free-page-reporting=on,deflate-on-oom=on"
}

// readOnlyDisk are the arguments of a read-only virtio-blk disk (the
// store's block image, the kernel's module tree) with its serial; dev
// names the device for the machine's bus.
func readOnlyDisk(dev func(string) string, id, path, serial string) []string {
	return []string{
		"-drive", "file=" + path + ",format=raw,if=none,id=" + id + ",readonly=on,cache=none,aio=threads",
		"-device", dev("virtio-blk-pci") + ",drive=" + id + ",serial=" + serial,
	}
}

// The x86_64 machines under TCG: the microvm machine (with the PIT and PIC
// its guest's timer setup needs there, given TSCArgs) and q35.
const (
	MachineTCGMicrovm = "microvm,accel=tcg,pit=on,pic=on,rtc=on,isa-serial=on,x-option-roms=off"
	MachineTCGQ35     = "q35,accel=tcg"
)

// MicrovmFirmware is the firmware the microvm machine boots: qboot,
// QEMU's own minimal firmware for it, which loads the kernel from fw_cfg
// itself. With x-option-roms=off no option ROM does that for SeaBIOS,
// which some distributions' QEMU (Debian 13's QEMU 10) makes the microvm
// machine's default: their guests then never start.
const MicrovmFirmware = "qboot.rom"

// MachineArgs are QEMU's arguments choosing machine, with qboot as the
// firmware of the microvm machine.
func MachineArgs(machine string) []string {
	args := []string{"-machine", machine}
	if strings.HasPrefix(machine, "microvm,") {
		args = append(args, "-bios", MicrovmFirmware)
	}
	return args
}

// TSCArgs tell a guest of the microvm machine under TCG its TSC's
// frequency, which it has nothing to calibrate against.
func TSCArgs(khz int) []string {
	return []string{fmt.Sprintf("tsc_early_khz=%d", khz), "tsc=reliable"}
}

func tscArgs(l vmm.Launch) []string {
	if l.KVM || l.TSCKHz == 0 || l.Arch != vmm.ArchX86_64 {
		return nil
	}
	return TSCArgs(l.TSCKHz)
}

// Pause stops the vCPUs (QMP stop).
func (Backend) Pause(l vmm.Launch) error {
	_, err := QMP(l.ControlSocket, "stop", nil, 5*time.Second)
	return err
}

// Resume lets the vCPUs run (QMP cont).
func (Backend) Resume(l vmm.Launch) error {
	_, err := QMP(l.ControlSocket, "cont", nil, 5*time.Second)
	return err
}

// Save pauses the guest and migrates it to f (QMP getfd, then migrate to
// "fd:"), with the bandwidth cap lifted: the guest is paused, so the one
// pass is all of its state. A failed migration (a device that refuses to
// migrate, a full disk) lets the guest run again.
func (Backend) Save(l vmm.Launch, f *os.File) error {
	s, err := dialQMP(l.ControlSocket, 10*time.Second)
	if err != nil {
		return err
	}
	defer s.Close()
	if _, err := s.Run("stop", nil); err != nil {
		return err
	}
	if err := migrate(s, l, f); err != nil {
		s.Deadline(10 * time.Second)
		s.Run("cont", nil)
		return err
	}
	return nil
}

func migrate(s *session, l vmm.Launch, f *os.File) error {
	// One pass of a paused guest, whatever a live move left set; a
	// template's memory stays in its file.
	if _, err := s.Run("migrate-set-capabilities", map[string]any{"capabilities": []map[string]any{
		{"capability": "pause-before-switchover", "state": false},
		{"capability": "x-ignore-shared", "state": l.Template != nil},
	}}); err != nil {
		return err
	}
	if _, err := s.Run("migrate-set-parameters", map[string]any{"max-bandwidth": int64(1) << 40}); err != nil {
		return err
	}
	if err := s.SendFD(migrationFD, f); err != nil {
		return err
	}
	if _, err := s.Run("migrate", map[string]any{"uri": "fd:" + migrationFD}); err != nil {
		return err
	}
	return waitMigration(s, 10*time.Minute)
}

// migrationFD is the name the state file's descriptor is given in QEMU.
const migrationFD = "microvm-state"

// waitMigration polls query-migrate until the migration (out or in) ends.
func waitMigration(s *session, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		m, err := queryMigrate(s)
		if err != nil {
			return err
		}
		switch m.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("migration %s: %s", m.Status, m.ErrorDesc)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("migration still %s after %s", m.Status, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// IncomingArgs start QEMU waiting for a migration given later over QMP,
// with the guest left paused once it came (-S): Restore and LiveIn let it
// run, the latter only after its NBD server, which held the volumes
// writable, is gone (as libvirt does).
func (Backend) IncomingArgs() []string { return []string{"-S", "-incoming", "defer"} }

// Restore migrates the state in f into a QEMU started with IncomingArgs
// and lets the guest run (it was paused when saved).
func (Backend) Restore(l vmm.Launch, f *os.File) error {
	s, err := dialRetry(l.ControlSocket)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.SendFD(migrationFD, f); err != nil {
		return err
	}
	if l.Template != nil {
		// A template's state holds no memory: a clone's is the file's.
		if _, err := s.Run("migrate-set-capabilities", map[string]any{"capabilities": []map[string]any{
			{"capability": "x-ignore-shared", "state": true},
		}}); err != nil {
			return err
		}
	}
	if _, err := s.Run("migrate-incoming", map[string]any{"uri": "fd:" + migrationFD}); err != nil {
		return err
	}
	if err := waitMigration(s, 10*time.Minute); err != nil {
		return err
	}
	_, err = s.Run("cont", nil)
	return err
}

// SetBalloon sets the guest's memory to memory-taken (QMP balloon: the
// target is the guest's size, not the balloon's).
func (Backend) SetBalloon(l vmm.Launch, memory, taken int64) error {
	_, err := QMP(l.ControlSocket, "balloon", map[string]int64{"value": memory - taken}, 5*time.Second)
	return err
}

// Balloon is memory less the guest's size now (QMP query-balloon).
func (Backend) Balloon(l vmm.Launch, memory int64) (int64, error) {
	out, err := QMP(l.ControlSocket, "query-balloon", nil, 5*time.Second)
	if err != nil {
		return 0, err
	}
	var b struct {
		Actual int64 `json:"actual"`
	}
	if err := json.Unmarshal(out, &b); err != nil {
		return 0, fmt.Errorf("query-balloon: %w", err)
	}
	return memory - b.Actual, nil
}
