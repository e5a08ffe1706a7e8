// Package cloudhypervisor runs VMs with cloud-hypervisor: the command line
// (direct kernel boot, virtio-net on the VM's TAP, the store over virtiofs,
// volumes as virtio-blk disks with their names as serials, the serial
// console to the console log) and its REST API on the api socket for
// shutdown (the ACPI power button) and state.
package cloudhypervisor

import (
	"fmt"
	"strings"
	"time"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/vmm"
)

// Backend is cloud-hypervisor as a vmm.Backend.
type Backend struct{}

// Name is config.HypervisorCloudHypervisor.
func (Backend) Name() string { return config.HypervisorCloudHypervisor }

// Binary is the same executable on every architecture.
func (Backend) Binary(string) string { return "cloud-hypervisor" }

// Capabilities: cloud-hypervisor shares directories only over virtiofs (it
// has no 9p), or a block image; a REST API socket; the TAP by name; the
// serial console to a file it truncates (no interactive socket).
func (Backend) Capabilities() vmm.Capabilities {
	return vmm.Capabilities{
		PVH:           true,
		Shares:        []string{vmm.ShareVirtiofs, vmm.ShareBlock},
		ControlSocket: "api.sock",
		Install:       "install a release binary from github.com/cloud-hypervisor/cloud-hypervisor/releases into PATH",
	}
}

// Command is the cloud-hypervisor command line.
func (b Backend) Command(vm *config.VM, l vmm.Launch) (vmm.Command, error) {
	// mergeable: guest memory KSM may merge (host.ksm), as QEMU's
	// mem-merge marks it by default; memory shared with virtiofsd is not
	// merged by the kernel whatever it is marked.
	mem := fmt.Sprintf("size=%dM,mergeable=on", vm.Memory.MiB())
	var fs, disks []string
	for _, s := range l.Shares {
		switch s.Kind() {
		case vmm.ShareVirtiofs:
			// vhost-user needs guest memory virtiofsd can map.
			mem += ",shared=on"
			fs = append(fs, "tag="+s.Tag+",socket="+s.VirtiofsSocket)
		case vmm.ShareBlock:
			disks = append(disks, "path="+s.Block+",readonly=on,serial="+vmm.StoreSerial)
		default:
			return vmm.Command{}, fmt.Errorf("vms.%s: cloud-hypervisor cannot share the store over %s (it supports virtiofs and block)", vm.Name, s.Kind())
		}
	}
	for _, d := range l.Disks {
		disks = append(disks, "path="+d.Path+",serial="+d.Name)
	}
	if l.Modules != "" {
		disks = append(disks, "path="+l.Modules+",readonly=on,serial="+vmm.ModulesSerial)
	}
	argv := []string{b.Binary(l.Arch),
		"--api-socket", "path=" + l.ControlSocket,
		"--kernel", l.Kernel,
		"--initramfs", l.Initrd,
		"--cmdline", vmm.KernelCmdline(vm, vmm.SerialConsole(l.Arch)),
		"--cpus", fmt.Sprintf("boot=%d", vm.VCPU),
		"--memory", mem,
		"--console", "off",
		"--serial", "file=" + l.ConsoleLog,
		"--net", "tap=" + vm.Net.TAP + ",mac=" + vm.Net.MAC,
		"--rng", "src=/dev/urandom",
		// Free page reporting: freed guest pages go back to the host.
		"--balloon", "size=0,free_page_reporting=on",
	}
	if len(fs) > 0 {
		argv = append(append(argv, "--fs"), fs...)
	}
	if len(disks) > 0 {
		argv = append(append(argv, "--disk"), disks...)
	}
	return vmm.Command{Argv: argv}, nil
}

// Shutdown presses the ACPI power button through the API (every attempt:
// cloud-hypervisor has no keyboard to send Ctrl-Alt-Del to).
func (Backend) Shutdown(l vmm.Launch, _ int) error {
	return vmm.APICall(l.ControlSocket, "PUT", "/api/v1/vm.power-button", nil, nil, 5*time.Second)
}

// Info is GET vm.info (the VM's state) and vmm.ping (the version).
func (Backend) Info(l vmm.Launch) (vmm.Info, error) {
	var vi struct {
		State string `json:"state"`
	}
	if err := vmm.APICall(l.ControlSocket, "GET", "/api/v1/vm.info", nil, &vi, 5*time.Second); err != nil {
		return vmm.Info{}, err
	}
	info := vmm.Info{State: strings.ToLower(vi.State)}
	var ping struct {
		Version string `json:"version"`
	}
	if vmm.APICall(l.ControlSocket, "GET", "/api/v1/vmm.ping", nil, &ping, 5*time.Second) == nil {
		info.Version = ping.Version
	}
	return info, nil
}

// CheckKernel: on x86_64 cloud-hypervisor boots an ELF vmlinux (PVH), not a bzImage.
func (b Backend) CheckKernel(path, arch string) error {
	if arch != vmm.ArchX86_64 {
		return nil
	}
	return vmm.RequireELF(b.Name(), path)
}

// DiskDevices is nil: disks carry serials.
func (Backend) DiskDevices(vmm.Launch) map[string]string { return nil }

// Pause is PUT vm.pause.
func (Backend) Pause(l vmm.Launch) error {
	return vmm.APICall(l.ControlSocket, "PUT", "/api/v1/vm.pause", nil, nil, 5*time.Second)
}

// Resume is PUT vm.resume.
func (Backend) Resume(l vmm.Launch) error {
	return vmm.APICall(l.ControlSocket, "PUT", "/api/v1/vm.resume", nil, nil, 5*time.Second)
}

// SetBalloon is PUT /api/v1/vm.resize {"desired_balloon": taken}.
func (Backend) SetBalloon(l vmm.Launch, _, taken int64) error {
	return vmm.APICall(l.ControlSocket, "PUT", "/api/v1/vm.resize", map[string]int64{"desired_balloon": taken}, nil, 5*time.Second)
}

// Balloon is memory less the guest's memory_actual_size (GET
// /api/v1/vm.info).
func (Backend) Balloon(l vmm.Launch, memory int64) (int64, error) {
	var vi struct {
		MemoryActualSize int64 `json:"memory_actual_size"`
	}
	if err := vmm.APICall(l.ControlSocket, "GET", "/api/v1/vm.info", nil, &vi, 5*time.Second); err != nil {
		return 0, err
	}
	return memory - vi.MemoryActualSize, nil
}
