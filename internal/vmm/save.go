package vmm

import (
	"os"
	"time"
)

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

// LiveMover is a backend that moves a running guest to a hypervisor on
// another host while the guest runs: its disks copied, then mirrored while
// written, its memory copied while dirtied (pre-copy), the guest paused
// only for the last pass.
type LiveMover interface {
	// LiveOut copies each of the guest's disks to the NBD server at the
	// unix socket nbd (each export named by its disk's Name) and mirrors
	// their writes until the guest is paused; then migrates the guest to
	// the unix socket migration, paused at most about downtime (where it
	// can copy the memory while the guest runs; else paused for the
	// memory's transfer). The disks
	// are in sync before the other side may run. On an error the guest
	// runs on here. On success this hypervisor holds the guest paused for
	// good (the caller ends it), or runs it again by Resume when the other
	// side could not run it.
	LiveOut(l Launch, nbd, migration string, downtime time.Duration) (LiveStats, error)
	// LiveIn serves the guest's disks at nbd and takes its migration at
	// migration, in a hypervisor started with IncomingArgs; it returns
	// once the guest runs here.
	LiveIn(l Launch, nbd, migration string) error
}

// LiveStats are what a live migration measured.
type LiveStats struct {
	// Downtime is how long the guest was paused: as the hypervisor says
	// after a pre-copy, from the pause until the migration completed
	// after a stop and copy.
	Downtime time.Duration
	// RAMBytes are the guest memory's bytes sent (every pass), and
	// DiskBytes the disks'.
	RAMBytes  int64
	DiskBytes int64
}
