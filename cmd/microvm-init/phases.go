package main

import (
	"fmt"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// phases times the steps of the guest's boot, from the kernel's start
// (CLOCK_BOOTTIME), for the one line microvm-init logs before the ready
// line: where a slow boot spends its time.
type phases struct {
	last  time.Duration
	parts []string
}

func bootTime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// newPhases starts timing; the time until now is the kernel's.
func newPhases() *phases {
	p := &phases{}
	p.mark("kernel")
	return p
}

// mark ends the phase called name.
func (p *phases) mark(name string) {
	now := bootTime()
	p.parts = append(p.parts, fmt.Sprintf("%s %dms", name, (now-p.last).Milliseconds()))
	p.last = now
}

func (p *phases) String() string { return strings.Join(p.parts, ", ") }
