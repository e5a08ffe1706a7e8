// Package supervisor runs a fleet's VM processes: it starts them detached
// (their own session, so the daemon can exit, crash or restart without
// touching them), adopts the ones a previous daemon started, watches them,
// restarts them by policy with exponential backoff (a crash loop leaves the
// VM failed with its last console lines), stops them cleanly, and keeps each
// VM's run record on disk.
//
// Each VM's state has one owner: a loop of its own (vm.go) that runs, one
// at a time, the commands given to the VM (start, stop, save, a change of
// supervision) and the events of its process (launched, ready, exited, the
// end of a backoff). The slow work (a launch, a clean shutdown, the wait
// for the ready line) runs beside the loop and reports back to it; a
// result of an attempt the VM has moved on from is dropped. Readers get
// the status the loop last published.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/state"
)

// State is where a VM is in its life (the API's apitypes.State).
type State = apitypes.State

// The states of a VM.
const (
	Starting = apitypes.Starting
	Running  = apitypes.Running
	Stopping = apitypes.Stopping
	Stopped  = apitypes.Stopped
	Backoff  = apitypes.Backoff // waiting to be restarted
	Failed   = apitypes.Failed  // crash loop or failed start; needs start or apply
	// Saved is a VM stopped by saving its state: `start` resumes it.
	Saved = apitypes.Saved
	// Created is a VM of the applied file that was never started
	// (autostart: false): its network is made, `start` boots it.
	Created = apitypes.Created
)

// Errors the supervisor returns (wrapped, naming the VM), for errors.Is.
var (
	// ErrUnknownVM: the supervisor does not know the VM.
	ErrUnknownVM = errors.New("no such VM")
	// ErrNotRunning: only a running VM can be saved.
	ErrNotRunning = errors.New("only a running VM can be saved")
	// ErrOtherSpec: a VM runs with another spec; it must be stopped first.
	ErrOtherSpec = errors.New("runs another spec; stop it first")
	// ErrStoppedWhileStarting: the VM was stopped (or started anew) while
	// its launch was under way.
	ErrStoppedWhileStarting = errors.New("stopped while starting")
)

// unknownVM is ErrUnknownVM naming the VM.
type unknownVM string

func (e unknownVM) Error() string      { return fmt.Sprintf("no VM named %q", string(e)) }
func (unknownVM) Is(target error) bool { return target == ErrUnknownVM }

// ReadyTimeout is how long a guest may take to report ready by default.
const ReadyTimeout = 3 * time.Minute

// Tuning is how restarts are paced.
type Tuning struct {
	// FirstBackoff is the wait before the first restart; it doubles with
	// each further exit, up to MaxBackoff.
	FirstBackoff, MaxBackoff time.Duration
	// A VM that exits CrashLoopCount times within CrashLoopWindow is failed.
	CrashLoopCount  int
	CrashLoopWindow time.Duration
	// StableAfter is how long a VM must run to have its backoff reset.
	StableAfter time.Duration
}

// DefaultTuning is the daemon's pacing of restarts.
var DefaultTuning = Tuning{FirstBackoff: time.Second, MaxBackoff: time.Minute, CrashLoopCount: 5, CrashLoopWindow: 3 * time.Minute, StableAfter: time.Minute}

// Supervisor owns the VM processes of one state directory.
type Supervisor struct {
	// ReadyTimeout is how long a guest may take to report ready (default
	// the package's ReadyTimeout; a GitOps daemon uses its health timeout).
	// Set it, and Tuning, before the first start.
	ReadyTimeout time.Duration
	// Tuning paces restarts (default DefaultTuning).
	Tuning   Tuning
	launcher Launcher
	dir      state.Dir
	log      *slog.Logger

	mu  sync.Mutex
	vms map[string]*vmLoop
	// published is what each VM's loop last published, for readers.
	published map[string]snapshot
	// changes is closed (and replaced) at every change of a VM's state
	// under mu: Changes hands it out.
	changes chan struct{}
}

// New returns a supervisor that starts VMs with l and keeps their run
// records in dir.
func New(l Launcher, dir state.Dir, log *slog.Logger) *Supervisor {
	return &Supervisor{ReadyTimeout: ReadyTimeout, Tuning: DefaultTuning, launcher: l, dir: dir, log: log,
		vms: map[string]*vmLoop{}, published: map[string]snapshot{}, changes: make(chan struct{})}
}

// Changes returns a channel that is closed at the next change of any VM's
// state (start, ready, exit, restart, stop, removal): a watcher reads the
// status after it is closed and asks for the next one.
func (s *Supervisor) Changes() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changes
}

// Touch tells the watchers of Changes that what they show changed beyond
// the supervisor's own VMs (a file applied: VMs defined or gone).
func (s *Supervisor) Touch() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.changedLocked()
}

// changedLocked tells the watchers; s.mu is held.
func (s *Supervisor) changedLocked() {
	close(s.changes)
	s.changes = make(chan struct{})
}

// vmNamed is the VM called name, its loop started when create is set and
// the supervisor does not know it yet (nil otherwise).
func (s *Supervisor) vmNamed(name string, create bool) *vmLoop {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vms[name]
	if v == nil && create {
		v = newVM(s, name)
		s.vms[name] = v
	}
	return v
}

// Adopt takes over the VMs whose run records name a live hypervisor
// (checked by pid, start time and command line); the VMs of the other
// records are known as stopped, and stale records are cleared. It returns
// the names adopted.
func (s *Supervisor) Adopt() ([]string, error) {
	recs, err := s.dir.RunRecords()
	if err != nil {
		return nil, err
	}
	var adopted []string
	for _, rec := range recs {
		v := s.vmNamed(rec.Name, true)
		var took bool
		err := v.call(func() error {
			var err error
			took, err = v.adopt(rec)
			return err
		})
		if err != nil {
			return adopted, err
		}
		if took {
			adopted = append(adopted, rec.Name)
		}
	}
	return adopted, nil
}

// UpdateSupervision takes vm's settings that need no restart (restart
// policy, timeouts, egress) for the VM of that name when it has the same
// restart spec.
func (s *Supervisor) UpdateSupervision(spec *config.VM) {
	if v := s.vmNamed(spec.Name, false); v != nil {
		v.call(func() error { v.retake(spec); return nil })
	}
}

// Start boots vm (replacing the spec the supervisor knew) and waits until
// the guest is ready. A VM already running with the same spec is left alone.
// Cancelling ctx (or stopping the VM) cancels a boot still preparing.
func (s *Supervisor) Start(ctx context.Context, spec *config.VM) error {
	return s.start(ctx, spec, nil)
}

// Launch is Start returning once the hypervisor runs (or its preparation
// failed): the wait for the guest's ready line goes on without the
// caller, its outcome in the VM's status and the Changes it signals.
func (s *Supervisor) Launch(ctx context.Context, spec *config.VM) error {
	launched := make(chan error, 1)
	go func() {
		err := s.start(ctx, spec, launched)
		select {
		case launched <- err:
		default: // told already
		}
	}()
	return <-launched
}

// start is Start; launched, when not nil, is sent nil once the
// hypervisor runs.
func (s *Supervisor) start(ctx context.Context, spec *config.VM, launched chan<- error) error {
	v := s.vmNamed(spec.Name, true)
	result := make(chan error, 1)
	if !v.do(func() { v.start(ctx, spec, result, launched) }) {
		return unknownVM(spec.Name) // forgotten meanwhile
	}
	return <-result
}

// Stop shuts vm down cleanly (power button, then Ctrl-Alt-Del, then
// signals) and leaves it stopped.
func (s *Supervisor) Stop(name string) error {
	v := s.vmNamed(name, false)
	if v == nil {
		return unknownVM(name)
	}
	done := make(chan error, 1)
	if !v.do(func() { v.stop(done) }) {
		return unknownVM(name)
	}
	return <-done
}

// SaveOutcome is how a save (stop --save) ended.
type SaveOutcome = apitypes.SaveOutcome

// Save saves a running VM's state and leaves it Saved: its next start
// resumes it. A save that fails (a device that refuses to migrate, a full
// disk) shuts the guest down cleanly instead, as Stop does, and says why.
func (s *Supervisor) Save(name string) (SaveOutcome, error) {
	v := s.vmNamed(name, false)
	if v == nil {
		return SaveOutcome{}, unknownVM(name)
	}
	type saved struct {
		out SaveOutcome
		err error
	}
	done := make(chan saved, 1)
	if !v.do(func() {
		v.save(func(out SaveOutcome, err error) { done <- saved{out, err} })
	}) {
		return SaveOutcome{}, unknownVM(name)
	}
	r := <-done
	return r.out, r.err
}

// Forget stops vm and drops it and its run record; its volumes stay.
func (s *Supervisor) Forget(name string) error {
	if err := s.Stop(name); err != nil && !errors.Is(err, ErrUnknownVM) {
		return err
	}
	s.mu.Lock()
	if v := s.vms[name]; v != nil {
		v.end()
	}
	delete(s.vms, name)
	delete(s.published, name)
	s.changedLocked()
	s.mu.Unlock()
	if err := os.Remove(s.dir.RunRecordPath(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
