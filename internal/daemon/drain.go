package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"microvm.dev/microvm/internal/apitypes"
)

// DrainResult is POST /v1/drain: the VMs moved away, and those that could
// not be (still here, with why).
type DrainResult = apitypes.DrainResult

// Drain moves every VM of this host to the peers to (every other peer of
// the file when empty), as Move does in mode, parallel at a time: each goes to the one with the
// most room then. A VM that cannot move stays here, running as it was,
// and is named with the reason.
func (d *Daemon) Drain(ctx context.Context, to []string, parallel int, mode string) (*DrainResult, error) {
	cfg := d.applied()
	if cfg == nil {
		return nil, ErrNoFile
	}
	if d.HostName() == "" {
		return nil, ErrNoPeers
	}
	if _, err := moveMode(mode); err != nil {
		return nil, fmt.Errorf("drain: %w", err)
	}
	if len(to) == 0 {
		for name := range cfg.Peers {
			if name != d.HostName() {
				to = append(to, name)
			}
		}
	}
	if len(to) == 0 {
		return nil, fmt.Errorf("drain: the file's peers name no other host: %w", ErrUnknownPeer)
	}
	for _, h := range to {
		if _, ok := cfg.Peers[h]; !ok || h == d.HostName() {
			return nil, fmt.Errorf("drain to %q: %w", h, ErrUnknownPeer)
		}
	}
	res := &DrainResult{Moved: []apitypes.MoveResult{}, Failed: map[string]string{}}
	var mu sync.Mutex
	sem := make(chan struct{}, max(1, parallel))
	var wg sync.WaitGroup
	for _, st := range d.List() {
		vm := st.Name
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			target, err := d.roomiest(ctx, to)
			var moved *apitypes.MoveResult
			if err == nil {
				moved, err = d.Move(ctx, vm, target, mode)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.Failed[vm] = err.Error()
				return
			}
			res.Moved = append(res.Moved, *moved)
		})
	}
	wg.Wait()
	return res, nil
}

// roomiest is the host of hosts with the most free room now.
func (d *Daemon) roomiest(ctx context.Context, hosts []string) (string, error) {
	best, room := "", int64(-1)
	var errs []error
	for _, h := range hosts {
		c, err := d.peerClient(h)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var hello apitypes.PeerHello
		if err := c.do(ctx, http.MethodGet, "/peer/v1/hello", nil, &hello); err != nil {
			errs = append(errs, err)
			continue
		}
		if hello.FreeBytes > room {
			best, room = h, hello.FreeBytes
		}
	}
	if best == "" {
		return "", fmt.Errorf("no host to move to: %w", errors.Join(errs...))
	}
	return best, nil
}
