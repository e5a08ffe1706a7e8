package main

import (
	"os"
	"os/signal"
	"sync"

	"golang.org/x/sys/unix"
)

// reaper is PID 1's child bookkeeping: it reaps every exited process
// (orphans included) and hands the exit status to whoever started that pid.
// Processes are therefore never waited for with exec.Cmd.Wait.
type reaper struct {
	mu       sync.Mutex
	waiters  map[int]chan unix.WaitStatus
	exited   map[int]unix.WaitStatus // exited before anyone asked
	handlers map[os.Signal]func()
	sigs     chan os.Signal
}

func newReaper() *reaper {
	return &reaper{
		waiters:  map[int]chan unix.WaitStatus{},
		exited:   map[int]unix.WaitStatus{},
		handlers: map[os.Signal]func(){},
		sigs:     make(chan os.Signal, 32),
	}
}

func (r *reaper) start() {
	signal.Notify(r.sigs, unix.SIGCHLD, unix.SIGINT, unix.SIGTERM, unix.SIGPWR)
	go func() {
		for s := range r.sigs {
			if s == unix.SIGCHLD {
				r.reap()
				continue
			}
			r.mu.Lock()
			h := r.handlers[s]
			r.mu.Unlock()
			if h != nil {
				h()
			}
		}
	}()
}

// signalReset restores default signal handling before exec'ing another
// program as PID 1 (Go's handlers do not survive exec, but its mask must not
// leak either).
func signalReset() {
	signal.Reset()
}

func (r *reaper) onSignal(s os.Signal, fn func()) {
	r.mu.Lock()
	r.handlers[s] = fn
	r.mu.Unlock()
}

func (r *reaper) reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
		r.mu.Lock()
		if ch, ok := r.waiters[pid]; ok {
			delete(r.waiters, pid)
			ch <- ws
		} else {
			r.exited[pid] = ws
		}
		r.mu.Unlock()
	}
}

// wait returns a channel that receives pid's exit status. Call it right
// after starting the process; an exit that happened meanwhile is kept.
func (r *reaper) wait(pid int) <-chan unix.WaitStatus {
	ch := make(chan unix.WaitStatus, 1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if ws, ok := r.exited[pid]; ok {
		delete(r.exited, pid)
		ch <- ws
		return ch
	}
	r.waiters[pid] = ch
	return ch
}

// running counts the processes someone is waiting for.
func (r *reaper) running() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.waiters)
}
