package vmm

import (
	"bytes"
	"fmt"
	"os"

	"microvm.dev/microvm/internal/config"
)

// How the store reaches a guest.
const (
	// ShareVirtiofs serves the image tree with virtiofsd over vhost-user.
	ShareVirtiofs = "virtiofs"
	// Share9p serves the image tree with the VMM's own 9p server.
	Share9p = "9p"
	// ShareBlock gives the image tree as a read-only ext4 disk image.
	ShareBlock = "block"
)

// StoreSerial is the virtio serial of the store disk (ShareBlock) where
// the backend sets serials.
const StoreSerial = "microvm-store"

// ModulesSerial is the virtio serial of the kernel's module tree disk
// (Launch.Modules) where the backend sets serials.
const ModulesSerial = "microvm-modules"

// IdentitySerial is the virtio serial of a template's or clone's identity
// disk (TemplateMemory.Identity).
const IdentitySerial = "microvm-identity"

// Backend is one hypervisor: the command line that starts a VM, how the
// running VMM is asked to shut the guest down, and what it can do
// (Capabilities), so that no code outside a backend's own package decides
// anything by its name. Implementations live in the subpackages qemu,
// cloudhypervisor and firecracker; internal/vmm/backends finds them by name.
type Backend interface {
	// Name is the config's name for the backend (vms.*.hypervisor).
	Name() string
	// Binary is the executable for a guest architecture.
	Binary(arch string) string
	// Capabilities says what the backend can do and needs.
	Capabilities() Capabilities
	// Command is how to start vm with l.
	Command(vm *config.VM, l Launch) (Command, error)
	// Shutdown asks the guest to power off. Attempt 0 is the polite request
	// (ACPI power button where there is one); later attempts escalate
	// (Ctrl-Alt-Del), before the caller falls back to signals.
	Shutdown(l Launch, attempt int) error
	// Info asks the running VMM for its state.
	Info(l Launch) (Info, error)
	// CheckKernel says whether the backend can boot the kernel image at path.
	CheckKernel(path, arch string) error
	// Pause stops the guest's vCPUs (for a consistent volume snapshot);
	// Resume lets them run again.
	Pause(l Launch) error
	Resume(l Launch) error
	// DiskDevices maps each disk (volume names, and StoreSerial for a block
	// store) to its guest device name for backends that cannot give disks a
	// serial; nil when the guest finds disks by serial.
	DiskDevices(l Launch) map[string]string
}

// Capabilities are what a backend can do and needs, read by the launcher,
// the daemon and verify instead of comparing names.
type Capabilities struct {
	// Shares are the ways the backend can give the store to a guest
	// (ShareVirtiofs, Share9p, ShareBlock), preferred first.
	Shares []string
	// ControlSocket is the file name of the VMM's control socket in the
	// VM's run directory (QMP, or a REST API).
	ControlSocket string
	// TAPFromFD says the VMM takes its TAP as an inherited, already open
	// descriptor (Launch.TAPFD), so an unprivileged VMM needs neither
	// /dev/net/tun nor the TAP's ownership.
	TAPFromFD bool
	// InteractiveConsole says whether Launch.ConsoleSocket takes an
	// interactive serial console client.
	InteractiveConsole bool
	// AppendsConsole says whether the VMM writes the console log in append
	// mode, so the log can be rotated by copy and truncate while it runs.
	AppendsConsole bool
	// PVH says the VMM boots an uncompressed ELF vmlinux through its PVH
	// entry on x86_64 (no firmware, no decompression in the guest), which
	// the launcher then extracts from the bzImage.
	PVH bool
	// SaveShares are the store shares with which the backend can save a
	// guest's state (vmm.Saver); none when it cannot save.
	SaveShares []string
	// LiveShares are the store shares with which the backend can move a
	// running guest to another host (vmm.LiveMover); none when it cannot.
	LiveShares []string
	// Install says how to install the backend's binary.
	Install string
}

// Command is how a backend starts one VM.
type Command struct {
	// Argv is the command line, binary first.
	Argv []string
	// Binary is the hypervisor binary, set by the launcher before it puts
	// anything (nsenter, setpriv) in front of Argv.
	Binary string
	// Files are written (mode 0600) before the VMM starts, by path.
	Files map[string][]byte
	// SerialToStdout says the VMM writes the serial console to its standard
	// output, which is then pointed at the console log.
	SerialToStdout bool
}

// Info is what a running VMM reports.
type Info struct {
	// State is the VMM's own word for the VM's state (running, paused, …).
	State string `json:"state"`
	// Version is the VMM's version when it reports one.
	Version string `json:"version,omitempty"`
}

// RequireELF fails unless path is an uncompressed ELF kernel (vmlinux),
// which cloud-hypervisor and Firecracker need on x86_64: they do not boot
// the compressed bzImage that distributions install as /boot/vmlinuz.
func RequireELF(backend, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%s kernel: %w", backend, err)
	}
	defer f.Close()
	magic := make([]byte, 4)
	if _, err := f.Read(magic); err != nil || !bytes.Equal(magic, []byte("\x7fELF")) {
		return fmt.Errorf("%s boots only an uncompressed ELF kernel (vmlinux) on x86_64; %s is not one "+
			"(set kernel: {path: /path/to/vmlinux, modules: …}; extract one from a bzImage with the kernel's scripts/extract-vmlinux)", backend, path)
	}
	return nil
}
