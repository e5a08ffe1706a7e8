package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/state"
	"microvm.dev/microvm/internal/steps"
	"microvm.dev/microvm/internal/vmm"
)

// vmLoop is one VM: its loop, and the state only the loop touches.
type vmLoop struct {
	s    *Supervisor
	name string
	// inbox carries what the loop runs, in order; quit ends the loop (the
	// VM forgotten).
	inbox chan func()
	quit  chan struct{}

	// The loop's own.
	spec     *config.VM
	run      Process
	cancel   context.CancelFunc // cancels a boot still preparing
	state    State
	wanted   bool // should be running
	attempt  int  // a new one at every start and stop: older results are dropped
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
	bootNote string      // how the last start brought the guest up
	backoff  *time.Timer // the wait before a restart, stopped by a stop
	// stalled is why the loop stopped a boot that was not ready in time,
	// for the exit to take as its cause and apply the policy to.
	stalled string
	// told are the answers to give once the state they answer is
	// published.
	told []func()
}

// newVM starts the loop of the VM called name, known as stopped.
func newVM(s *Supervisor, name string) *vmLoop {
	v := &vmLoop{s: s, name: name, state: Stopped, inbox: make(chan func()), quit: make(chan struct{})}
	go v.loop()
	return v
}

// loop runs what the VM is given, one at a time, and publishes its
// status after each.
func (v *vmLoop) loop() {
	for {
		select {
		case f := <-v.inbox:
			f()
			v.publish()
			for _, tell := range v.told {
				tell()
			}
			v.told = nil
		case <-v.quit:
			return
		}
	}
}

// do gives f to the loop; it says false when the VM was forgotten.
func (v *vmLoop) do(f func()) bool {
	select {
	case v.inbox <- f:
		return true
	case <-v.quit:
		return false
	}
}

// call runs f in the loop and returns its error once the state it left
// is published.
func (v *vmLoop) call(f func() error) error {
	done := make(chan error, 1)
	if !v.do(func() { v.reply(done, f()) }) {
		return unknownVM(v.name)
	}
	return <-done
}

// end ends the loop; s.mu is held.
func (v *vmLoop) end() { close(v.quit) }

// later runs tell once the state the loop is leaving is published: an
// answer to a caller. It runs in the loop.
func (v *vmLoop) later(tell func()) { v.told = append(v.told, tell) }

// reply sends err to ch (when there is one; buffered: never blocks) once
// the state the loop is leaving is published. It runs in the loop.
func (v *vmLoop) reply(ch chan<- error, err error) {
	if ch == nil {
		return
	}
	v.later(func() {
		select {
		case ch <- err:
		default:
		}
	})
}

// adopt takes over the hypervisor rec names, when it still runs, and says
// whether it did; otherwise the VM is stopped (or saved) and a stale
// record is cleared.
func (v *vmLoop) adopt(rec state.RunRecord) (bool, error) {
	spec := rec.Spec
	v.spec = &spec
	if rec.PID == 0 {
		if rec.Saved {
			v.state = Saved
		}
		return false, nil
	}
	r, err := v.s.launcher.Adopt(rec)
	if err != nil {
		v.s.log.Info("clearing a stale run record", "vm", v.name, "pid", rec.PID, "reason", err)
		v.lastExit = "exited while no daemon watched it"
		rec.PID, rec.ProcStart = 0, 0
		return false, v.s.dir.WriteRunRecord(rec)
	}
	// Starting until its console shows the ready line (at once when the
	// guest had finished booting before the daemon went away).
	v.run, v.state, v.wanted, v.started = r, Starting, true, r.StartedAt()
	v.boot = time.Duration(rec.BootSeconds * float64(time.Second))
	v.attempt++
	a := v.attempt
	go v.watchExit(a, r)
	go func() {
		err := r.WaitReady(v.s.ReadyTimeout)
		v.do(func() {
			switch {
			case err != nil:
				v.s.log.Warn("an adopted VM did not report ready", "vm", v.name, "err", err)
			case v.attempt == a && v.state == Starting:
				v.state = Running
			}
		})
	}()
	v.s.log.Info("adopted a running VM", "vm", v.name, "pid", rec.PID)
	return true, nil
}

// retake makes spec the VM's spec when only what needs no restart differs
// (config.VM.RestartSpec), and says whether it did.
func (v *vmLoop) retake(spec *config.VM) bool {
	if v.spec == nil || v.spec.SpecHash() != spec.SpecHash() {
		return false
	}
	v.spec = spec
	return true
}

// start boots spec, unless a hypervisor runs already (with the same spec:
// nothing to do). result is sent how the boot ended (ready or not),
// launched nil once the hypervisor runs.
func (v *vmLoop) start(ctx context.Context, spec *config.VM, result, launched chan<- error) {
	if v.run != nil {
		if v.retake(spec) {
			v.reply(result, nil)
		} else {
			v.reply(result, fmt.Errorf("%s %w", v.name, ErrOtherSpec))
		}
		return
	}
	v.spec, v.wanted, v.failure, v.exits = spec, true, "", nil
	v.launch(ctx, result, launched)
}

// launch starts a new attempt: the launch runs beside the loop and
// reports to launched().
func (v *vmLoop) launch(ctx context.Context, result, launched chan<- error) {
	v.stopBackoff()
	if v.cancel != nil {
		v.cancel() // a launch still preparing gives up
	}
	ctx, cancel := context.WithCancel(ctx)
	v.attempt++
	a, spec := v.attempt, v.spec
	v.state, v.cancel, v.steps, v.volumes = Starting, cancel, nil, nil
	go func() {
		t0 := time.Now()
		r, err := v.s.launcher.Launch(ctx, spec, nil)
		if !v.do(func() { v.launched(a, spec, r, err, time.Since(t0), cancel, result, launched) }) && err == nil {
			r.Stop(time.Duration(spec.Supervision.StopTimeout)) // forgotten meanwhile
		}
	}()
}

// launched takes the outcome of attempt a's launch (r or err, after
// prepare): a failed launch fails the VM; a hypervisor the VM no longer
// wants is stopped; else the VM runs, its exit is watched and its
// readiness awaited.
func (v *vmLoop) launched(a int, spec *config.VM, r Process, err error, prepare time.Duration, cancel context.CancelFunc, result, launched chan<- error) {
	if err != nil {
		cancel()
		if v.attempt == a {
			v.state, v.failure, v.wanted = Failed, err.Error(), false
		}
		// A VM that never ran is still known to the state directory, as it
		// is to the supervisor (`microvm plan` reads the records).
		if _, rerr := os.Stat(v.s.dir.RunRecordPath(v.name)); errors.Is(rerr, os.ErrNotExist) {
			v.s.dir.WriteRunRecord(state.RunRecord{Name: v.name, Spec: *spec})
		}
		v.s.log.Error("VM failed to start", "vm", v.name, "err", err)
		err = fmt.Errorf("%s: %w", v.name, err)
		v.reply(launched, err)
		v.reply(result, err)
		return
	}
	if v.attempt != a { // stopped (or started anew) while it was being prepared
		cancel()
		go r.Stop(time.Duration(spec.Supervision.StopTimeout))
		err := fmt.Errorf("%s: %w", v.name, ErrStoppedWhileStarting)
		v.reply(launched, err)
		v.reply(result, err)
		return
	}
	v.run, v.started, v.prepare, v.steps, v.bootNote, v.volumes = r, r.StartedAt(), prepare, r.Timings(), r.Boot(), r.Volumes()
	if werr := v.s.dir.WriteRunRecord(r.Record()); werr != nil {
		v.s.log.Error("write run record", "vm", v.name, "err", werr)
	}
	go v.watchExit(a, r)
	v.reply(launched, nil)
	go func() {
		err := r.WaitReady(v.s.ReadyTimeout)
		v.do(func() { v.ready(a, r, err, cancel, result) })
	}()
}

// ready takes how attempt a's wait for the ready line ended. A guest
// that was not ready in time (a stalled boot, a failing health check) is
// stopped and restarted as its policy says, as if it had failed
// (systemd's start timeout, a Kubernetes startup probe); a guest that
// said it failed, or whose policy is no, is stopped and left failed. The
// result says why either way, once the hypervisor is stopped.
func (v *vmLoop) ready(a int, r Process, err error, cancel context.CancelFunc, result chan<- error) {
	defer cancel()
	mine := v.attempt == a
	timeout := time.Duration(v.spec.Supervision.StopTimeout)
	switch {
	case err != nil && mine && v.wanted && errors.Is(err, vmm.ErrNotReady) && v.spec.Supervision.Restart != config.RestartNo:
		v.stalled = err.Error()
		v.s.log.Warn("VM not ready in time; stopping it to restart it", "vm", v.name, "err", err)
		err = fmt.Errorf("%s: %w", v.name, err)
		go func() {
			r.Stop(timeout) // its exit restarts it
			v.do(func() { v.reply(result, err) })
		}()
		return
	case err == nil && mine && v.state == Starting:
		v.state, v.boot = Running, time.Since(r.StartedAt())
		rec := r.Record()
		rec.BootSeconds = v.boot.Seconds()
		if werr := v.s.dir.WriteRunRecord(rec); werr != nil {
			v.s.log.Error("write run record", "vm", v.name, "err", werr)
		}
		v.s.log.Info("VM ready", "vm", v.name, "pid", r.PID(), "boot", v.boot.Round(time.Millisecond))
		v.reply(result, nil)
		return
	case err == nil:
		v.reply(result, nil)
		return
	}
	failed := 0
	if mine {
		v.attempt++
		failed = v.attempt
		v.run, v.state, v.failure, v.wanted = nil, Failed, err.Error(), false
	}
	v.s.log.Error("VM failed to start", "vm", v.name, "err", err)
	err = fmt.Errorf("%s: %w", v.name, err)
	go func() {
		r.Stop(timeout)
		v.do(func() {
			if failed != 0 && v.attempt == failed {
				rec := r.Record()
				rec.PID, rec.ProcStart = 0, 0
				v.s.dir.WriteRunRecord(rec)
			}
			v.reply(result, err)
		})
	}()
}

// watchExit tells the loop when attempt a's hypervisor r exits.
func (v *vmLoop) watchExit(a int, r Process) {
	<-r.Exited()
	v.do(func() { v.exited(a, r) })
}

// exited applies the restart policy to the exit of attempt a's
// hypervisor r (an exit the VM was not waiting for: a stop or a restart
// on purpose moved it on).
func (v *vmLoop) exited(a int, r Process) {
	if v.attempt != a || v.run != r {
		return
	}
	v.run = nil
	rec := r.Record()
	rec.PID, rec.ProcStart = 0, 0
	v.s.dir.WriteRunRecord(rec)
	clean := v.noteExit(r.ExitErr())
	stalled := v.stalled != ""
	if stalled {
		clean, v.lastExit, v.stalled = false, v.stalled, ""
	}
	now := time.Now()
	tu := v.s.Tuning
	if now.Sub(v.started) > tu.StableAfter && !stalled { // a boot that never got ready was not stable
		v.exits = nil
	}
	v.exits = append(v.exits, now)
	policy := v.spec.Supervision.Restart
	if !v.wanted || !(policy == config.RestartAlways || (policy == config.RestartOnFailure && !clean)) {
		v.state = Stopped
		v.s.log.Info("VM exited", "vm", v.name, "exit", v.lastExit, "restart", false)
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
		v.s.log.Error("VM in a crash loop; not restarting", "vm", v.name, "exits", recent)
		return
	}
	delay := tu.FirstBackoff << (len(v.exits) - 1)
	if delay > tu.MaxBackoff || delay <= 0 {
		delay = tu.MaxBackoff
	}
	v.state = Backoff
	v.s.log.Warn("VM exited; restarting after backoff", "vm", v.name, "exit", v.lastExit, "backoff", delay)
	v.backoff = time.AfterFunc(delay, func() {
		v.do(func() {
			if v.attempt != a || !v.wanted || v.state != Backoff {
				return // stopped, or started anew (a rollback), meanwhile
			}
			v.restarts++ // counted when it happens
			v.launch(context.Background(), nil, nil)
		})
	})
}

// stopBackoff cancels a restart still waiting.
func (v *vmLoop) stopBackoff() {
	if v.backoff != nil {
		v.backoff.Stop()
		v.backoff = nil
	}
}

// noteExit records how the VM's hypervisor ended and says whether that was
// clean. A workload's exit status decides, as `docker run --restart` does:
// 0 is clean; a guest powered off without one is clean too.
func (v *vmLoop) noteExit(exit error) bool {
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

// stopping marks the VM as stopping on purpose (not to be restarted; a
// boot still preparing cancelled, a backoff's restart too) and returns its
// hypervisor (nil when none runs).
func (v *vmLoop) stopping() Process {
	v.wanted = false
	v.attempt++
	v.stopBackoff()
	if v.cancel != nil {
		v.cancel()
	}
	if v.run == nil {
		if v.state != Saved {
			v.state = Stopped
		}
		return nil
	}
	v.state = Stopping
	return v.run
}

// stop shuts the VM down cleanly beside the loop; done is sent how it went.
func (v *vmLoop) stop(done chan<- error) {
	r := v.stopping()
	if r == nil {
		v.reply(done, nil)
		return
	}
	timeout := time.Duration(v.spec.Supervision.StopTimeout)
	go func() {
		err := r.Stop(timeout)
		if !v.do(func() { v.reply(done, v.stopped(r, false, err)) }) {
			done <- err
		}
	}()
}

// save saves the running VM's state beside the loop, or shuts it down
// cleanly when the save fails; done is told how it went.
func (v *vmLoop) save(done func(SaveOutcome, error)) {
	if v.run == nil || v.state != Running {
		err := fmt.Errorf("%s is %s: %w", v.name, v.state, ErrNotRunning)
		v.later(func() { done(SaveOutcome{}, err) })
		return
	}
	r := v.stopping()
	timeout := time.Duration(v.spec.Supervision.StopTimeout)
	go func() {
		info, err := r.Save()
		out := SaveOutcome{Saved: err == nil, SaveInfo: info}
		if err != nil {
			v.s.log.Warn("save failed; shutting the VM down cleanly instead", "vm", v.name, "err", err)
			out = SaveOutcome{Fallback: err.Error()}
			err = r.Stop(timeout)
		}
		if !v.do(func() {
			err := v.stopped(r, out.Saved, err)
			v.later(func() { done(out, err) })
		}) {
			done(out, err)
		}
	}()
}

// stopped records that the VM's hypervisor r ended by a stop (or a save)
// and returns err, or the record's error.
func (v *vmLoop) stopped(r Process, saved bool, err error) error {
	if v.run == r {
		v.run, v.state = nil, Stopped
		v.noteExit(r.ExitErr())
		if saved {
			v.state, v.lastExit = Saved, "saved"
		}
	}
	rec := r.Record()
	rec.PID, rec.ProcStart, rec.Saved = 0, 0, saved
	if werr := v.s.dir.WriteRunRecord(rec); werr != nil && err == nil {
		err = werr
	}
	v.s.log.Info("VM stopped", "vm", v.name, "saved", saved)
	return err
}
