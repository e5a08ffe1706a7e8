package vmm

import (
	"path/filepath"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/state"
	"microvm.dev/microvm/internal/volume"
)

// Layout is the one place a VM's files and sockets are named: its
// directory under the state directory (volumes, console log, host key, run
// record) and its run directory (sockets, the initramfs while it is
// loaded), which its hypervisor alone may write.
type Layout struct {
	// StateDir is microvm's state directory.
	StateDir string
	// RunDir is the daemon's run directory (its socket's directory).
	RunDir string
	// VM is the VM's name.
	VM string
}

// Dir is the VM's directory in the state directory.
func (l Layout) Dir() string { return state.Dir{Root: l.StateDir}.VMDir(l.VM) }

// Run is the VM's run directory: its hypervisor's sockets, and its
// initramfs (on a tmpfs on a real host) until the guest has loaded it.
func (l Layout) Run() string { return filepath.Join(l.RunDir, "vms", l.VM) }

// ConsoleLog is the serial console's log.
func (l Layout) ConsoleLog() string { return filepath.Join(l.Dir(), "console.log") }

// ConsoleSocket is where an interactive serial console listens.
func (l Layout) ConsoleSocket() string { return filepath.Join(l.Run(), "console.sock") }

// Initrd is the VM's own initramfs (its spec, host key and secrets).
func (l Layout) Initrd() string { return filepath.Join(l.Run(), "initramfs.cpio") }

// VirtiofsSocket is the vhost-user socket of the store's virtiofsd.
func (l Layout) VirtiofsSocket() string { return filepath.Join(l.Run(), "store.sock") }

// MoveSockets are the unix sockets a live move's disks (NBD) and memory
// (migration) pass through, in the run directory where the hypervisor
// reaches them.
func (l Layout) MoveSockets() (nbd, migration string) {
	return filepath.Join(l.Run(), "move-nbd.sock"), filepath.Join(l.Run(), "move-migration.sock")
}

// VMMLog is the hypervisor's own output (and its helpers').
func (l Layout) VMMLog() string { return filepath.Join(l.Dir(), "vmm.log") }

// HostKey is the VM's SSH host key (its private half; .pub beside it).
func (l Layout) HostKey() string { return filepath.Join(l.Dir(), "ssh_host_ed25519_key") }

// KnownHosts pins the VM's host key for ssh.
func (l Layout) KnownHosts() string { return filepath.Join(l.Dir(), "known_hosts") }

// Volume is the image file of the VM's data volume called name.
func (l Layout) Volume(name string) string { return volume.Path(l.Dir(), name) }

// Launch fills a Launch with the VM's locations for a backend with caps:
// sockets, console and volumes; kernel, initramfs and shares are left to
// the caller.
func (l Layout) Launch(vm *config.VM, caps Capabilities) Launch {
	out := Launch{
		Arch:          HostArch(),
		ConsoleLog:    l.ConsoleLog(),
		ConsoleSocket: l.ConsoleSocket(),
		ControlSocket: filepath.Join(l.Run(), caps.ControlSocket),
	}
	for _, v := range vm.Volumes {
		out.Disks = append(out.Disks, Disk{Name: v.Name, Path: l.Volume(v.Name)})
	}
	return out
}
