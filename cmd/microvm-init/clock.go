package main

import (
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"
)

// setClock sets the guest's wall clock to the host's time (Unix
// nanoseconds), as the host says it after resuming a saved guest, whose
// clock stood still while it was saved: `/run/microvm/init clock NS`.
func setClock(arg string) error {
	ns, err := strconv.ParseInt(arg, 10, 64)
	if err != nil || ns <= 0 {
		return fmt.Errorf("not a time in Unix nanoseconds: %q", arg)
	}
	ts := unix.NsecToTimespec(ns)
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return fmt.Errorf("set the clock: %w", err)
	}
	return nil
}
