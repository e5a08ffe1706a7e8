// Package supervisor runs a fleet's VM processes: it starts them detached
// (their own session, so the daemon can exit, crash or restart without
// touching them), adopts the ones a previous daemon started, watches them,
// restarts them by policy with exponential backoff (a crash loop leaves the
// VM failed with its last console lines), stops them cleanly, and keeps each
// VM's run record on disk.
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
	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/state"
	"microvm.dev/microvm/internal/steps"
	"microvm.dev/microvm/internal/vmm"
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

// ErrUnknownVM is the error (wrapped) about a VM the supervisor does not
// know.
var ErrUnknownVM = errors.New("no such VM")

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

type vmProc struct {
	spec     *config.VM
	run      Process
	cancel   context.CancelFunc // cancels a boot in progress
	state    State
	wanted   bool // should be running
	gen      int  // bumped on every start and stop; stale watchers give up
	restarts int
	exits    []time.Time
	lastExit string
	exitCode *int // the workload's, when it ended the VM
	failure  string
	boot     time.Duration
	prepare  time.Duration
	steps    []steps.Timing
	volumes  map[string]string // what the last launch did to each volume
	started  time.Time
	bootNote string // how the last start brought the guest up
	// stalled is why the supervisor stopped a boot that was not ready in
	// time, for its watcher to take as the exit and apply the policy to.
	stalled string
}

// Supervisor owns the VM processes of one state directory.
type Supervisor struct {
	// ReadyTimeout is how long a guest may take to report ready (default
	// the package's ReadyTimeout; a GitOps daemon uses its health timeout).
	ReadyTimeout time.Duration
	// Tuning paces restarts (default DefaultTuning).
	Tuning   Tuning
	launcher Launcher
	dir      state.Dir
	log      *slog.Logger
	mu       sync.Mutex
	vms      map[string]*vmProc
	// changes is closed (and replaced) at every change of a VM's state
	// under mu: Changes hands it out.
	changes chan struct{}
}

// New returns a supervisor that starts VMs with l and keeps their run
// records in dir.
func New(l Launcher, dir state.Dir, log *slog.Logger) *Supervisor {
	return &Supervisor{ReadyTimeout: ReadyTimeout, Tuning: DefaultTuning, launcher: l, dir: dir, log: log, vms: map[string]*vmProc{}, changes: make(chan struct{})}
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
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.changedLocked()
	for _, rec := range recs {
		spec := rec.Spec
		v := &vmProc{spec: &spec, state: Stopped}
		s.vms[rec.Name] = v
		if rec.PID == 0 {
			if rec.Saved {
				v.state = Saved
			}
			continue
		}
		r, err := s.launcher.Adopt(rec)
		if err != nil {
			s.log.Info("clearing a stale run record", "vm", rec.Name, "pid", rec.PID, "reason", err)
			v.lastExit = "exited while no daemon watched it"
			rec.PID, rec.ProcStart = 0, 0
			if err := s.dir.WriteRunRecord(rec); err != nil {
				return adopted, err
			}
			continue
		}
		// Starting until its console shows the ready line (at once when the
		// guest had finished booting before the daemon went away).
		v.run, v.state, v.wanted, v.started = r, Starting, true, r.StartedAt()
		v.boot = time.Duration(rec.BootSeconds * float64(time.Second))
		v.gen++
		gen := v.gen
		go s.watch(rec.Name, v, r, gen)
		go func(name string) {
			if err := r.WaitReady(s.ReadyTimeout); err != nil {
				s.log.Warn("an adopted VM did not report ready", "vm", name, "err", err)
				return
			}
			s.mu.Lock()
			if v.gen == gen && v.state == Starting {
				v.state = Running
				s.changedLocked()
			}
			s.mu.Unlock()
		}(rec.Name)
		adopted = append(adopted, rec.Name)
		s.log.Info("adopted a running VM", "vm", rec.Name, "pid", rec.PID)
	}
	return adopted, nil
}

// Running reports the spec hash of each VM that is running or starting.
func (s *Supervisor) Running() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	for name, v := range s.vms {
		if v.run != nil {
			out[name] = v.spec.SpecHash()
		}
	}
	return out
}

// UpdateSupervision takes vm's settings that need no restart (restart
// policy, timeouts, egress) for the VM of that name when it has the same
// restart spec.
func (s *Supervisor) UpdateSupervision(vm *config.VM) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v := s.vms[vm.Name]; v != nil {
		v.retake(vm)
	}
}

// retake makes vm the VM's spec when only what needs no restart differs
// (config.VM.RestartSpec), and says whether it did.
func (v *vmProc) retake(vm *config.VM) bool {
	if v.spec == nil || v.spec.SpecHash() != vm.SpecHash() {
		return false
	}
	v.spec = vm
	return true
}

// Start boots vm (replacing the spec the supervisor knew) and waits until
// the guest is ready. A VM already running with the same spec is left alone.
// Cancelling ctx (or stopping the VM) cancels a boot still preparing.
func (s *Supervisor) Start(ctx context.Context, vm *config.VM) error {
	return s.start(ctx, vm, nil)
}

// Launch is Start returning once the hypervisor runs (or its preparation
// failed): the wait for the guest's ready line goes on without the
// caller, its outcome in the VM's status and the Changes it signals.
func (s *Supervisor) Launch(ctx context.Context, vm *config.VM) error {
	launched := make(chan error, 1)
	go func() {
		err := s.start(ctx, vm, launched)
		select {
		case launched <- err:
		default: // told already
		}
	}()
	return <-launched
}

// start is Start; launched, when not nil, is sent nil once the
// hypervisor runs.
func (s *Supervisor) start(ctx context.Context, vm *config.VM, launched chan<- error) error {
	s.mu.Lock()
	v := s.vms[vm.Name]
	if v == nil {
		v = &vmProc{}
		s.vms[vm.Name] = v
	}
	if v.run != nil {
		same := v.retake(vm)
		s.mu.Unlock()
		if same {
			return nil
		}
		return fmt.Errorf("%s runs another spec; stop it first", vm.Name)
	}
	v.spec, v.wanted, v.failure, v.exits = vm, true, "", nil
	s.changedLocked()
	s.mu.Unlock()
	return s.boot(ctx, vm.Name, v, launched)
}

// boot starts the hypervisor and waits for the ready line; launched, when
// not nil, is sent nil once the hypervisor runs.
func (s *Supervisor) boot(ctx context.Context, name string, v *vmProc, launched chan<- error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.mu.Lock()
	v.state = Starting
	v.gen++
	gen, spec := v.gen, v.spec
	v.cancel, v.steps, v.volumes = cancel, nil, nil
	s.changedLocked()
	s.mu.Unlock()
	t0 := time.Now()
	r, err := s.launcher.Launch(ctx, spec, nil)
	if err != nil {
		s.mu.Lock()
		if v.gen == gen {
			v.state, v.failure, v.wanted = Failed, err.Error(), false
			s.changedLocked()
		}
		s.mu.Unlock()
		// A VM that never ran is still known to the state directory, as it
		// is to the supervisor (`microvm plan` reads the records).
		if _, rerr := os.Stat(s.dir.RunRecordPath(name)); errors.Is(rerr, os.ErrNotExist) {
			s.dir.WriteRunRecord(state.RunRecord{Name: name, Spec: *spec})
		}
		s.log.Error("VM failed to start", "vm", name, "err", err)
		return fmt.Errorf("%s: %w", name, err)
	}
	s.mu.Lock()
	current := v.gen == gen
	if current {
		v.run, v.started, v.prepare, v.steps, v.bootNote, v.volumes = r, r.StartedAt(), time.Since(t0), r.Timings(), r.Boot(), r.Volumes()
		s.changedLocked()
	}
	s.mu.Unlock()
	if !current { // stopped while it was being prepared
		r.Stop(time.Duration(spec.Supervision.StopTimeout))
		return fmt.Errorf("%s: stopped while starting", name)
	}
	if werr := s.dir.WriteRunRecord(r.Record()); werr != nil {
		s.log.Error("write run record", "vm", name, "err", werr)
	}
	go s.watch(name, v, r, gen)
	if launched != nil {
		launched <- nil
	}
	return s.awaitReady(name, v, r, gen)
}

// awaitReady waits for a started VM's ready line. A guest that was not
// ready in time (a stalled boot, a failing health check) is stopped and
// restarted as its policy says, as if it had failed (systemd's start
// timeout, a Kubernetes startup probe); a guest that said it failed, or
// whose policy is no, is stopped and left failed (its watcher is told to
// give up first). The error says why either way.
func (s *Supervisor) awaitReady(name string, v *vmProc, r Process, gen int) error {
	err := r.WaitReady(s.ReadyTimeout)
	s.mu.Lock()
	mine := v.gen == gen
	switch {
	case err != nil && mine && v.wanted && errors.Is(err, vmm.ErrNotReady) && v.spec.Supervision.Restart != config.RestartNo:
		v.stalled = err.Error()
		s.mu.Unlock()
		s.log.Warn("VM not ready in time; stopping it to restart it", "vm", name, "err", err)
		r.Stop(time.Duration(v.spec.Supervision.StopTimeout)) // its watcher restarts it
		return fmt.Errorf("%s: %w", name, err)
	case err == nil && mine && v.state == Starting:
		v.state, v.boot = Running, time.Since(r.StartedAt())
		// Under the lock: the record is not rewritten once the VM exited.
		rec := r.Record()
		rec.BootSeconds = v.boot.Seconds()
		if werr := s.dir.WriteRunRecord(rec); werr != nil {
			s.log.Error("write run record", "vm", name, "err", werr)
		}
	case err != nil && mine:
		v.gen++
		v.run, v.state, v.failure, v.wanted = nil, Failed, err.Error(), false
	}
	s.changedLocked()
	s.mu.Unlock()
	if err == nil {
		s.log.Info("VM ready", "vm", name, "pid", r.PID(), "boot", time.Since(r.StartedAt()).Round(time.Millisecond))
		return nil
	}
	r.Stop(time.Duration(v.spec.Supervision.StopTimeout))
	if mine {
		rec := r.Record()
		rec.PID, rec.ProcStart = 0, 0
		s.dir.WriteRunRecord(rec)
	}
	s.log.Error("VM failed to start", "vm", name, "err", err)
	return fmt.Errorf("%s: %w", name, err)
}

// watch waits for a hypervisor to exit and applies the restart policy.
func (s *Supervisor) watch(name string, v *vmProc, r Process, gen int) {
	<-r.Exited()
	s.mu.Lock()
	if v.gen != gen || v.run != r {
		s.mu.Unlock()
		return // stopped or restarted on purpose
	}
	v.run = nil
	rec := r.Record()
	rec.PID, rec.ProcStart = 0, 0
	s.dir.WriteRunRecord(rec)
	clean := v.noteExit(r.ExitErr())
	stalled := v.stalled != ""
	if stalled {
		clean, v.lastExit, v.stalled = false, v.stalled, ""
	}
	now := time.Now()
	tu := s.Tuning
	if now.Sub(v.started) > tu.StableAfter && !stalled { // a boot that never got ready was not stable
		v.exits = nil
	}
	v.exits = append(v.exits, now)
	policy := v.spec.Supervision.Restart
	restart := v.wanted && (policy == config.RestartAlways || (policy == config.RestartOnFailure && !clean))
	if !restart {
		v.state = Stopped
		s.changedLocked()
		s.mu.Unlock()
		s.log.Info("VM exited", "vm", name, "exit", v.lastExit, "restart", false)
		return
	}
	recent := 0
	for _, t := range v.exits {
		if now.Sub(t) < tu.CrashLoopWindow {
			recent++
		}
	}
	if recent >= tu.CrashLoopCount {
		v.state, v.wanted = Failed, false
		v.failure = fmt.Sprintf("crash loop: exited %d times within %s; last console lines:\n%s", recent, tu.CrashLoopWindow, consoleTail(r.ConsoleLog(), 10))
		s.changedLocked()
		s.mu.Unlock()
		s.log.Error("VM in a crash loop; not restarting", "vm", name, "exits", recent)
		return
	}
	delay := tu.FirstBackoff << (len(v.exits) - 1)
	if delay > tu.MaxBackoff || delay <= 0 {
		delay = tu.MaxBackoff
	}
	v.state = Backoff
	s.changedLocked()
	s.mu.Unlock()
	s.log.Warn("VM exited; restarting after backoff", "vm", name, "exit", v.lastExit, "backoff", delay)
	time.Sleep(delay)
	s.mu.Lock()
	if v.gen != gen || !v.wanted || v.state != Backoff {
		s.mu.Unlock()
		return // stopped, or started anew (a rollback), meanwhile
	}
	v.restarts++ // counted when it happens
	s.changedLocked()
	s.mu.Unlock()
	s.boot(context.Background(), name, v, nil)
}

// noteExit records how the VM's hypervisor ended and says whether that was
// clean. A workload's exit status decides, as `docker run --restart` does:
// 0 is clean; a guest powered off without one is clean too.
func (v *vmProc) noteExit(exit error) bool {
	clean := exit == nil
	v.lastExit, v.exitCode = "powered off", nil
	var we *guest.WorkloadExit
	if errors.As(exit, &we) {
		clean, v.exitCode = we.Code == 0, &we.Code
	}
	if exit != nil {
		v.lastExit = exit.Error()
	}
	return clean
}

// Stop shuts vm down cleanly (power button, then Ctrl-Alt-Del, then
// signals) and leaves it stopped.
func (s *Supervisor) Stop(name string) error {
	v, r, err := s.stopping(name, false)
	if err != nil || r == nil {
		return err
	}
	err = r.Stop(time.Duration(v.spec.Supervision.StopTimeout))
	return s.stopped(name, v, r, false, err)
}

// SaveOutcome is how a save (stop --save) ended.
type SaveOutcome = apitypes.SaveOutcome

// Save saves a running VM's state and leaves it Saved: its next start
// resumes it. A save that fails (a device that refuses to migrate, a full
// disk) shuts the guest down cleanly instead, as Stop does, and says why.
func (s *Supervisor) Save(name string) (SaveOutcome, error) {
	v, r, err := s.stopping(name, true)
	if err != nil {
		return SaveOutcome{}, err
	}
	saved, err := r.Save()
	if err == nil {
		return SaveOutcome{Saved: true, SaveInfo: saved}, s.stopped(name, v, r, true, nil)
	}
	s.log.Warn("save failed; shutting the VM down cleanly instead", "vm", name, "err", err)
	out := SaveOutcome{Fallback: err.Error()}
	err = r.Stop(time.Duration(v.spec.Supervision.StopTimeout))
	return out, s.stopped(name, v, r, false, err)
}

// stopping marks vm as stopping on purpose (not to be restarted, a boot
// still preparing cancelled) and returns its process (nil when none
// runs; save then needs one).
func (s *Supervisor) stopping(name string, save bool) (*vmProc, Process, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.changedLocked()
	v := s.vms[name]
	if v == nil {
		return nil, nil, unknownVM(name)
	}
	if save && (v.run == nil || v.state != Running) {
		return nil, nil, fmt.Errorf("%s is %s: only a running VM can be saved", name, v.state)
	}
	v.wanted = false
	v.gen++
	if v.cancel != nil {
		v.cancel() // a boot still preparing gives up
	}
	if v.run == nil {
		if v.state != Saved {
			v.state = Stopped
		}
		return v, nil, nil
	}
	v.state = Stopping
	return v, v.run, nil
}

// stopped records that vm's process r ended by a stop (or a save).
func (s *Supervisor) stopped(name string, v *vmProc, r Process, saved bool, err error) error {
	s.mu.Lock()
	v.run, v.state = nil, Stopped
	v.noteExit(r.ExitErr())
	if saved {
		v.state, v.lastExit = Saved, "saved"
	}
	rec := r.Record()
	rec.PID, rec.ProcStart, rec.Saved = 0, 0, saved
	s.changedLocked()
	s.mu.Unlock()
	if werr := s.dir.WriteRunRecord(rec); werr != nil && err == nil {
		err = werr
	}
	s.log.Info("VM stopped", "vm", name, "saved", saved)
	return err
}

// Forget stops vm and drops it and its run record; its volumes stay.
func (s *Supervisor) Forget(name string) error {
	if err := s.Stop(name); err != nil && !errors.Is(err, ErrUnknownVM) {
		return err
	}
	s.mu.Lock()
	delete(s.vms, name)
	s.changedLocked()
	s.mu.Unlock()
	if err := os.Remove(s.dir.RunRecordPath(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
