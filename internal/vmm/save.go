package vmm

import "os"

// Saver is a backend that can save a running guest's memory and device
// state to a file and resume it from there in a new VMM process (QEMU's
// migration to a file, as libvirt's managedsave; Firecracker's and
// cloud-hypervisor's snapshots are the same idea).
type Saver interface {
	// Save pauses the guest and writes its whole state to f. On success
	// the VMM is left with the guest stopped for good (the caller ends
	// the process); on failure the guest runs on as before, so the caller
	// can still shut it down cleanly.
	Save(l Launch, f *os.File) error
	// IncomingArgs are added to the command line of a VMM that is to
	// resume a saved guest instead of booting one.
	IncomingArgs() []string
	// Restore loads the state in f into a VMM started with IncomingArgs
	// and lets the guest run on.
	Restore(l Launch, f *os.File) error
}
