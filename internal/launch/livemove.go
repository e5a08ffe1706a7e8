package launch

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"microvm.dev/microvm/internal/vmm"
)

// CanMoveLive says why the running guest cannot move to another host
// while it runs ("" when it can): its backend must be a vmm.LiveMover and
// its store one the backend migrates (a 9p or virtiofs share holds host
// state that does not move).
func (r *Running) CanMoveLive() string {
	p := r.Prepared
	if !canLive(p.Backend) {
		return p.Backend.Name() + " cannot move a running guest"
	}
	if caps := p.Backend.Capabilities(); !slices.Contains(caps.LiveShares, p.Resolved.Share) {
		return fmt.Sprintf("%s moves a running guest only with store: %s; this one's store is %s",
			p.Backend.Name(), strings.Join(caps.LiveShares, " or "), p.Resolved.Share)
	}
	return ""
}

// LiveRecord writes the record the other host takes the running guest by
// (savestate.MovedMeta, Live set), from the host from, and returns its
// path and the read-only disks the guest runs on (its pins), which go
// with it.
func (r *Running) LiveRecord(from string) (string, map[string]string, error) {
	key, err := r.Prepared.resumeKey()
	if err != nil {
		return "", nil, err
	}
	path, err := r.Prepared.savedDir().ForLiveMove(from, key, r.Ready)
	return path, key.Pins, err
}

// DropLiveRecord removes the record LiveRecord wrote.
func (r *Running) DropLiveRecord() { r.Prepared.savedDir().Drop() }

// LiveOut moves the running guest through the unix sockets of its move
// (vmm.Layout.MoveSockets, which the caller listens on and forwards), the
// guest paused at most about downtime. On an error the guest runs on
// here.
func (r *Running) LiveOut(downtime time.Duration) (vmm.LiveStats, error) {
	p := r.Prepared
	nbd, migration := p.layout.MoveSockets()
	return p.Backend.(vmm.LiveMover).LiveOut(p.Launch, nbd, migration, downtime)
}

// OwnSocket gives the guest's hypervisor user a socket the caller made
// for it to connect to.
func (r *Running) OwnSocket(path string) error {
	if u := r.Prepared.Resolved.User; u != nil {
		return u.Own(path)
	}
	return nil
}

// MarkMovedAway records that the guest runs on another host now: a stop
// ends this hypervisor at once, without asking the guest it no longer
// holds to shut down.
func (r *Running) MarkMovedAway() { r.movedAway.Store(true) }
