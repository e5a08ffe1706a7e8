// Package usage keeps what the daemon measures of each running VM (its
// host memory, CPU time and network) as samples over a window (an hour by
// default), for the status, the metrics and the web console's graphs.
package usage

import (
	"slices"
	"sync"
	"time"

	"microvm.dev/microvm/internal/apitypes"
)

// DefaultWindow is how long samples are kept.
const DefaultWindow = time.Hour

// History keeps each VM's samples for its window. It is safe for
// concurrent use.
type History struct {
	window time.Duration
	mu     sync.Mutex
	vms    map[string][]apitypes.VMSample
}

// NewHistory keeps samples for window.
func NewHistory(window time.Duration) *History {
	return &History{window: window, vms: map[string][]apitypes.VMSample{}}
}

// Add records s of the VM vm, dropping the samples older than the window
// before s.
func (h *History) Add(vm string, s apitypes.VMSample) {
	h.mu.Lock()
	defer h.mu.Unlock()
	list := h.vms[vm]
	cut := 0
	for cut < len(list) && s.Time.Sub(list[cut].Time) > h.window {
		cut++
	}
	h.vms[vm] = append(list[cut:], s)
}

// Samples are the VM's samples, oldest first (a copy).
func (h *History) Samples(vm string) []apitypes.VMSample {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.vms[vm])
}

// All are every VM's samples (copies), by name.
func (h *History) All() map[string][]apitypes.VMSample {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string][]apitypes.VMSample, len(h.vms))
	for vm, list := range h.vms {
		out[vm] = slices.Clone(list)
	}
	return out
}

// Last is the VM's newest sample.
func (h *History) Last(vm string) (apitypes.VMSample, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	list := h.vms[vm]
	if len(list) == 0 {
		return apitypes.VMSample{}, false
	}
	return list[len(list)-1], true
}

// Keep forgets the VMs keep does not name (removed from the host).
func (h *History) Keep(keep func(vm string) bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for vm := range h.vms {
		if !keep(vm) {
			delete(h.vms, vm)
		}
	}
}
