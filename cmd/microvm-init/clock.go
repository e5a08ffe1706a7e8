package main

import (
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"

	"microvm.dev/microvm/internal/guestroot"
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

// authorize changes the keys the guest's SSH server lets in, as a host
// does when the guest moves to another while it runs: `/run/microvm/init
// authorize KEY…` adds keys, `authorize --only KEY…` leaves only them.
// It runs in the guest's root (an SSH session's).
func authorize(args []string) error {
	var root guestroot.Root
	if args[0] == "--only" {
		if len(args) < 2 {
			return fmt.Errorf("--only needs a key")
		}
		return root.WriteAuthorized(args[1:])
	}
	return root.AddAuthorized(args)
}
