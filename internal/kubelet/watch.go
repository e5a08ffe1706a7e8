package kubelet

import (
	"context"
	"time"

	"microvm.dev/microvm/internal/apitypes"
)

// watch follows the VMs' states on the daemon's event stream (GET
// /v1/events) until ctx ends, and polls the list every Poll while the
// stream is down. When the stream comes back (a restarted daemon), the
// host's file is applied again before any pod's VM is put: a daemon
// started without a file holds none. Retries that fall due are started
// every second.
func (p *Provider) watch(ctx context.Context) {
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				p.retryDue(now)
			}
		}
	}()
	reconnect := false
	for ctx.Err() == nil {
		err := p.follow(ctx, reconnect)
		if ctx.Err() != nil {
			return
		}
		p.opts.Log.Warn("the daemon's event stream ended; polling until it is back", "err", err)
		reconnect = true
		if list, err := p.opts.Daemon.VMs(); err == nil {
			p.observe(list)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(p.opts.Poll):
		}
	}
}

// follow reads the event stream until it ends; on a reconnect, the first
// event applies the host's file again first.
func (p *Provider) follow(ctx context.Context, reconnect bool) error {
	return p.opts.Daemon.WatchVMs(ctx, func(list []apitypes.VMStatus) {
		if reconnect {
			reconnect = false
			if err := p.applyBase(ctx); err != nil {
				p.opts.Log.Error("apply the host's file again", "err", err)
			}
		}
		p.observe(list)
	})
}
