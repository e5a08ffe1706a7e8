package main

import (
	"strings"
	"sync"
	"testing"
	"time"
)

// The boot line has every phase from the kernel's on; a phase that lasts
// says so, with what it waits for, until it ends.
func TestPhases(t *testing.T) {
	start := time.Now()
	clock := func() time.Duration { return 1500*time.Millisecond + time.Since(start) }
	var mu sync.Mutex
	var said []string
	var mods loading
	mods.add("/lib/modules/x/virtio_blk.ko")
	mods.add("/lib/modules/x/ext4.ko")
	p := startPhases("early mounts", 10*time.Millisecond, func(m string) { mu.Lock(); said = append(said, m); mu.Unlock() }, clock)
	p.beginWaiting("modules", mods.String)
	time.Sleep(50 * time.Millisecond)
	p.begin("network")
	mu.Lock()
	n := len(said)
	mu.Unlock()
	p.finish()
	time.Sleep(30 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if n == 0 || !strings.HasPrefix(said[0], "boot: still in modules after ") || !strings.HasSuffix(said[0], ", waiting for ext4 virtio_blk") {
		t.Errorf("while modules stalled: %q", said)
	}
	if len(said) > n+1 { // at most one report racing the end
		t.Errorf("reports after the boot ended: %q", said[n:])
	}
	parts := strings.Split(p.String(), ", ")
	if len(parts) != 4 || !strings.HasPrefix(parts[0], "kernel 15") || !strings.HasPrefix(parts[2], "modules ") || !strings.HasPrefix(parts[3], "network ") {
		t.Errorf("boot line %q", p.String())
	}
}
