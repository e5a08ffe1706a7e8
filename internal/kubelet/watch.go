package kubelet

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"microvm.dev/microvm/internal/supervisor"
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
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r, w := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := p.opts.Daemon.StreamContext(ctx, "/v1/events", w)
		w.CloseWithError(err)
		done <- err
	}()
	err := readEvents(r, func(list []supervisor.Status) {
		if reconnect {
			reconnect = false
			if err := p.applyBase(ctx); err != nil {
				p.opts.Log.Error("apply the host's file again", "err", err)
			}
		}
		p.observe(list)
	})
	r.CloseWithError(err)
	cancel()
	if serr := <-done; err == nil || err == io.EOF {
		err = serr
	}
	if err == nil {
		err = io.EOF
	}
	return err
}

// readEvents reads server-sent events from r and calls vms with each
// "vms" event's list, until r ends.
func readEvents(r io.Reader, vms func([]supervisor.Status)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	event, data := "", ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if event == "vms" && data != "" {
				var list []supervisor.Status
				if err := json.Unmarshal([]byte(data), &list); err != nil {
					return fmt.Errorf("the daemon's event: %w", err)
				}
				vms(list)
			}
			event, data = "", ""
		case strings.HasPrefix(line, ":"): // a comment (keepalive)
		case strings.HasPrefix(line, "event:"):
			event = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			data += strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " ")
		}
	}
	return sc.Err()
}
