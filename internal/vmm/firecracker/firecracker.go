// Package firecracker runs VMs with Firecracker: a JSON configuration file
// (kernel, initramfs, drives, vCPUs and memory, the TAP) given with
// --config-file, the serial console on its standard output, and its REST
// API on the api socket for shutdown (Ctrl-Alt-Del) and state. Firecracker
// has no shared directories, so the store reaches the guest as a read-only
// ext4 disk image, and it gives disks no serials, so the guest finds them
// by order (vda, vdb, …).
package firecracker

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/vmm"
)

// Backend is Firecracker as a vmm.Backend.
type Backend struct{}

// Name is config.HypervisorFirecracker.
func (Backend) Name() string { return config.HypervisorFirecracker }

// Binary is the same executable on every architecture.
func (Backend) Binary(string) string { return "firecracker" }

// Capabilities: the store only as a block image; a REST API socket; the
// TAP by name; the serial console on its standard output, appended to the
// console log (no interactive socket).
func (Backend) Capabilities() vmm.Capabilities {
	return vmm.Capabilities{
		PVH:            true,
		Shares:         []string{vmm.ShareBlock},
		ControlSocket:  "api.sock",
		AppendsConsole: true,
		Install:        "install a release binary from github.com/firecracker-microvm/firecracker/releases into PATH",
	}
}

// Config is Firecracker's configuration file (the same objects its API takes).
type Config struct {
	BootSource BootSource  `json:"boot-source"`
	Drives     []Drive     `json:"drives"`
	Machine    Machine     `json:"machine-config"`
	Network    []Interface `json:"network-interfaces"`
	Entropy    struct{}    `json:"entropy"`
	Balloon    Balloon     `json:"balloon"`
	Logger     Logger      `json:"logger"`
}

// Balloon is the balloon device: not inflated, reporting the guest's free
// pages so they go back to the host.
type Balloon struct {
	AmountMiB         int  `json:"amount_mib"`
	DeflateOnOOM      bool `json:"deflate_on_oom"`
	FreePageReporting bool `json:"free_page_reporting"`
}

// BootSource is the kernel, initramfs and command line.
type BootSource struct {
	KernelImagePath string `json:"kernel_image_path"`
	InitrdPath      string `json:"initrd_path"`
	BootArgs        string `json:"boot_args"`
}

// Drive is one virtio-blk disk.
type Drive struct {
	DriveID      string `json:"drive_id"`
	PathOnHost   string `json:"path_on_host"`
	IsRootDevice bool   `json:"is_root_device"`
	IsReadOnly   bool   `json:"is_read_only"`
}

// Machine is the vCPU count and memory size.
type Machine struct {
	VCPUCount  int   `json:"vcpu_count"`
	MemSizeMiB int64 `json:"mem_size_mib"`
	SMT        bool  `json:"smt"`
}

// Interface is one virtio-net device on a host TAP.
type Interface struct {
	IfaceID     string `json:"iface_id"`
	GuestMAC    string `json:"guest_mac"`
	HostDevName string `json:"host_dev_name"`
}

// Logger sends Firecracker's own log to a file, away from the console.
type Logger struct {
	LogPath string `json:"log_path"`
	Level   string `json:"level"`
}

// ConfigPath is where the configuration file of the VM whose console log
// is at consoleLog is written.
func ConfigPath(l vmm.Launch) string {
	return filepath.Join(filepath.Dir(l.ConsoleLog), "firecracker.json")
}

// LogPath is where Firecracker's own log goes.
func LogPath(l vmm.Launch) string {
	return filepath.Join(filepath.Dir(l.ConsoleLog), "firecracker.log")
}

// Command is the firecracker command line and its configuration file.
func (b Backend) Command(vm *config.VM, l vmm.Launch) (vmm.Command, error) {
	cfg := Config{
		BootSource: BootSource{
			KernelImagePath: l.Kernel,
			InitrdPath:      l.Initrd,
			// Firecracker ends the VM on a keyboard-controller reset and has no PCI bus.
			BootArgs: vmm.KernelCmdline(vm, vmm.SerialConsole(l.Arch), "reboot=k", "pci=off"),
		},
		Machine: Machine{VCPUCount: vm.VCPU, MemSizeMiB: vm.Memory.MiB()},
		Network: []Interface{{IfaceID: "net0", GuestMAC: vm.Net.MAC, HostDevName: vm.Net.TAP}},
		Logger:  Logger{LogPath: LogPath(l), Level: "Warning"},
		Balloon: Balloon{DeflateOnOOM: true, FreePageReporting: true},
	}
	for _, s := range l.Shares {
		if s.Kind() != vmm.ShareBlock {
			return vmm.Command{}, fmt.Errorf("vms.%s: firecracker cannot share the store over %s (it has no shared directories; the store is given as a block image)", vm.Name, s.Kind())
		}
		cfg.Drives = append(cfg.Drives, Drive{DriveID: "store", PathOnHost: s.Block, IsReadOnly: true})
	}
	for _, d := range l.Disks {
		cfg.Drives = append(cfg.Drives, Drive{DriveID: "vol-" + d.Name, PathOnHost: d.Path})
	}
	if l.Modules != "" {
		cfg.Drives = append(cfg.Drives, Drive{DriveID: "modules", PathOnHost: l.Modules, IsReadOnly: true})
	}
	js, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return vmm.Command{}, err
	}
	return vmm.Command{
		Argv: []string{b.Binary(l.Arch), "--id", vm.Name, "--api-sock", l.ControlSocket, "--config-file", ConfigPath(l)},
		Files: map[string][]byte{
			ConfigPath(l): append(js, '\n'),
			// Firecracker opens its log file but does not create it.
			LogPath(l): nil,
		},
		SerialToStdout: true,
	}, nil
}

// Shutdown sends Ctrl-Alt-Del, which microvm-init takes as a shutdown
// request (Firecracker has no ACPI; the action exists on x86_64 only).
func (Backend) Shutdown(l vmm.Launch, _ int) error {
	if l.Arch != vmm.ArchX86_64 {
		return fmt.Errorf("firecracker on %s has no way to ask the guest to shut down", l.Arch)
	}
	return vmm.APICall(l.ControlSocket, "PUT", "/actions", map[string]string{"action_type": "SendCtrlAltDel"}, nil, 5*time.Second)
}

// Info is GET / (the instance description).
func (Backend) Info(l vmm.Launch) (vmm.Info, error) {
	var in struct {
		State      string `json:"state"`
		VMMVersion string `json:"vmm_version"`
	}
	if err := vmm.APICall(l.ControlSocket, "GET", "/", nil, &in, 5*time.Second); err != nil {
		return vmm.Info{}, err
	}
	return vmm.Info{State: strings.ToLower(in.State), Version: in.VMMVersion}, nil
}

// CheckKernel: on x86_64 Firecracker boots an ELF vmlinux, not a bzImage.
func (b Backend) CheckKernel(path, arch string) error {
	if arch != vmm.ArchX86_64 {
		return nil
	}
	return vmm.RequireELF(b.Name(), path)
}

// DiskDevices names the disks in drive order: the store first, then the
// volumes, then the kernel's modules.
func (Backend) DiskDevices(l vmm.Launch) map[string]string {
	out := map[string]string{}
	n := 0
	next := func() string {
		d := "vd" + string(rune('a'+n))
		n++
		return d
	}
	for _, s := range l.Shares {
		if s.Kind() == vmm.ShareBlock {
			out[vmm.StoreSerial] = next()
		}
	}
	for _, d := range l.Disks {
		out[d.Name] = next()
	}
	if l.Modules != "" {
		out[vmm.ModulesSerial] = next()
	}
	return out
}

// Pause is PATCH /vm {"state": "Paused"}.
func (Backend) Pause(l vmm.Launch) error {
	return vmm.APICall(l.ControlSocket, "PATCH", "/vm", map[string]string{"state": "Paused"}, nil, 5*time.Second)
}

// Resume is PATCH /vm {"state": "Resumed"}.
func (Backend) Resume(l vmm.Launch) error {
	return vmm.APICall(l.ControlSocket, "PATCH", "/vm", map[string]string{"state": "Resumed"}, nil, 5*time.Second)
}

// SetBalloon is PATCH /balloon {"amount_mib": taken in MiB}.
func (Backend) SetBalloon(l vmm.Launch, _, taken int64) error {
	return vmm.APICall(l.ControlSocket, "PATCH", "/balloon", map[string]int64{"amount_mib": taken >> 20}, nil, 5*time.Second)
}

// Balloon is the balloon's target (GET /balloon: Firecracker reports the
// actual size only with statistics polling, which microvm leaves off).
func (Backend) Balloon(l vmm.Launch, _ int64) (int64, error) {
	var b struct {
		AmountMiB int64 `json:"amount_mib"`
	}
	if err := vmm.APICall(l.ControlSocket, "GET", "/balloon", nil, &b, 5*time.Second); err != nil {
		return 0, err
	}
	return b.AmountMiB << 20, nil
}
