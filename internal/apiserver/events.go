package apiserver

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/daemon"
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
				if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", apitypes.EventVMs, b); err != nil {
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
