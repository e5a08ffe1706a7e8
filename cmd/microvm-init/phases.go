package main

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// stallAfter is how long a boot phase may run before microvm-init says on
// the console which one it is still in (and again as long as it lasts), so
// that a guest that never reports ready shows where it stopped in the last
// console lines the host reports.
const stallAfter = 20 * time.Second

// phases times the steps of the guest's boot, from the kernel's start
// (CLOCK_BOOTTIME), for the one line microvm-init logs before the ready
// line: where a slow boot spends its time. While a phase lasts longer than
// stallAfter it says so on the console, with what the phase waits for.
type phases struct {
	mu      sync.Mutex
	last    time.Duration
	current string
	waiting func() string // what the current phase waits for, or nil
	parts   []string
	done    chan struct{}
	once    sync.Once
	every   time.Duration        // stallAfter
	say     func(string)         // the console
	clock   func() time.Duration // bootTime
}

func bootTime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// newPhases starts timing; the time until now is the kernel's, and the
// next phase is first.
func newPhases(first string) *phases {
	return startPhases(first, stallAfter, func(msg string) { logf("%s", msg) }, bootTime)
}

func startPhases(first string, every time.Duration, say func(string), clock func() time.Duration) *phases {
	p := &phases{current: "kernel", done: make(chan struct{}), every: every, say: say, clock: clock}
	p.begin(first)
	go p.watch()
	return p
}

// begin ends the current phase and starts the one called name.
func (p *phases) begin(name string) { p.beginWaiting(name, nil) }

// beginWaiting is begin for a phase whose waiting reports what it still
// waits for (called only while it stalls).
func (p *phases) beginWaiting(name string, waiting func() string) {
	now := p.clock()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.parts = append(p.parts, fmt.Sprintf("%s %dms", p.current, (now-p.last).Milliseconds()))
	p.last, p.current, p.waiting = now, name, waiting
}

// finish ends the last phase and the watch; String then has every phase.
func (p *phases) finish() {
	p.begin("")
	p.stop()
}

// stop ends the watch (a boot that failed says why itself).
func (p *phases) stop() { p.once.Do(func() { close(p.done) }) }

func (p *phases) watch() {
	tick := time.NewTicker(p.every)
	defer tick.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-tick.C:
		}
		p.mu.Lock()
		name, since, waiting := p.current, p.clock()-p.last, p.waiting
		p.mu.Unlock()
		if name == "" || since < p.every {
			continue
		}
		msg := fmt.Sprintf("boot: still in %s after %s", name, since.Round(time.Second))
		if waiting != nil {
			if w := waiting(); w != "" {
				msg += ", waiting for " + w
			}
		}
		p.say(msg)
	}
}

func (p *phases) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.parts, ", ")
}
