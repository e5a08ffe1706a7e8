package vmm

// Ballooner is a backend whose guests' memory the host can take back
// while they run, through the balloon device every VM has (free page
// reporting on, and deflated on the guest's own out-of-memory): QEMU's
// virtio-balloon, cloud-hypervisor's --balloon, Firecracker's balloon.
type Ballooner interface {
	// SetBalloon has the guest, whose memory is memory bytes, give up
	// taken bytes of it (0: all of it back).
	SetBalloon(l Launch, memory, taken int64) error
	// Balloon is how much of its memory the guest has given up, as the
	// VMM reports it.
	Balloon(l Launch, memory int64) (int64, error)
}
