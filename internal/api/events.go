package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"microvm.dev/microvm/internal/daemon"
	"microvm.dev/microvm/internal/supervisor"
)

// Event stream pacing: changes within eventCoalesce are sent as one
// event; a comment every eventKeepalive keeps idle proxies from closing the
// stream.
const (
	eventCoalesce  = 100 * time.Millisecond
	eventKeepalive = 15 * time.Second
)

// events serves GET /v1/events, server-sent events (text/event-stream):
// a "vms" event carrying the VMs as GET /v1/vms lists them, at once and
// after every change of a VM's state, until the client goes away.
func events(d *daemon.Daemon) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		fl, ok := w.(http.Flusher)
		if !ok {
			writeErr(w, http.StatusInternalServerError, fmt.Errorf("streaming is not supported here"))
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Accel-Buffering", "no")
		w.WriteHeader(http.StatusOK)
		keep := time.NewTicker(eventKeepalive)
		defer keep.Stop()
		var last []byte
		for {
			changes := d.Supervisor().Changes()
			b, err := json.Marshal(redactAll(d.List()))
			if err != nil {
				return
			}
			if string(b) != string(last) {
				if _, err := fmt.Fprintf(w, "event: vms\ndata: %s\n\n", b); err != nil {
					return
				}
				fl.Flush()
				last = b
			}
			select {
			case <-r.Context().Done():
				return
			case <-keep.C:
				if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
					return
				}
				fl.Flush()
			case <-changes:
				time.Sleep(eventCoalesce)
			}
		}
	}
}

// WatchVMs follows GET /v1/events until ctx ends or the stream does,
// calling vms with the VM list of each "vms" event (the first at once).
// It returns why the stream ended (io.EOF when the daemon closed it).
func (c *Client) WatchVMs(ctx context.Context, vms func([]supervisor.Status)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r, w := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := c.StreamContext(ctx, "/v1/events", w)
		w.CloseWithError(err)
		done <- err
	}()
	err := readEvents(r, vms)
	r.CloseWithError(err)
	cancel()
	if serr := <-done; err == nil {
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
	sc.Buffer(make([]byte, 64<<10), MaxBody*4)
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
