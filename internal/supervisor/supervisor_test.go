package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/state"
	"microvm.dev/microvm/internal/steps"
	"microvm.dev/microvm/internal/testutil"
	"microvm.dev/microvm/internal/vmm"
)

// These tests run the supervisor against a fake launcher: no hypervisor
// can be as quick or as obedient, and the restart policy, backoff, crash
// loop and adoption are the supervisor's own logic. The e2e tests run the
// same supervisor with real QEMU.

// fakeProc is a "hypervisor" that exits when told (exit) or stopped.
type fakeProc struct {
	pid     int
	started time.Time
	spec    config.VM
	console string
	ready   error
	exited  chan struct{}
	once    sync.Once
	err     error
	stopped bool
	saveErr error // what Save fails with (nil: it saves)
}

func (p *fakeProc) PID() int                   { return p.pid }
func (p *fakeProc) StartedAt() time.Time       { return p.started }
func (p *fakeProc) Exited() <-chan struct{}    { return p.exited }
func (p *fakeProc) ExitErr() error             { return p.err }
func (p *fakeProc) Pause() error               { return nil }
func (p *fakeProc) Resume() error              { return nil }
func (p *fakeProc) ConsoleLog() string         { return p.console }
func (p *fakeProc) Readiness() string          { return "" }
func (p *fakeProc) Volumes() map[string]string { return nil }
func (p *fakeProc) Timings() []steps.Timing    { return []steps.Timing{{Name: "fake", Seconds: 0.001}} }
func (p *fakeProc) WaitReady(time.Duration) error {
	return p.ready
}
func (p *fakeProc) Stop(time.Duration) error {
	p.stopped = true
	p.exit(nil)
	return nil
}
func (p *fakeProc) Boot() string { return "cold boot" }
func (p *fakeProc) Save() (SaveInfo, error) {
	if p.saveErr != nil {
		return SaveInfo{}, p.saveErr
	}
	p.exit(nil)
	return SaveInfo{Bytes: 42, Seconds: 0.001}, nil
}
func (p *fakeProc) Record() state.RunRecord {
	return state.RunRecord{Name: p.spec.Name, Spec: p.spec, PID: p.pid, ProcStart: 1, StartedAt: p.started}
}

// exit makes the process exit with err (nil: a clean power-off).
func (p *fakeProc) exit(err error) {
	p.once.Do(func() { p.err = err; close(p.exited) })
}

// fakeLauncher starts fakeProcs; onLaunch, when set, decides what each
// launch of a VM does (its number counts from 1).
type fakeLauncher struct {
	mu       sync.Mutex
	procs    map[string][]*fakeProc
	times    map[string][]time.Time
	onLaunch func(ctx context.Context, p *fakeProc, n int) error
	adopt    map[int]bool // pids Adopt accepts
	console  string
}

func newFake(t *testing.T) *fakeLauncher {
	console := filepath.Join(t.TempDir(), "console.log")
	os.WriteFile(console, []byte("line 1\nkernel panic: the last line\n"), 0o600)
	return &fakeLauncher{procs: map[string][]*fakeProc{}, times: map[string][]time.Time{}, adopt: map[int]bool{}, console: console}
}

func (f *fakeLauncher) Launch(ctx context.Context, vm *config.VM, _ func(steps.Timing)) (Process, error) {
	f.mu.Lock()
	n := len(f.procs[vm.Name]) + 1
	p := &fakeProc{pid: 1000 + n, started: time.Now(), spec: *vm, console: f.console, exited: make(chan struct{})}
	f.procs[vm.Name] = append(f.procs[vm.Name], p)
	f.times[vm.Name] = append(f.times[vm.Name], time.Now())
	hook := f.onLaunch
	f.mu.Unlock()
	if hook != nil {
		if err := hook(ctx, p, n); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (f *fakeLauncher) Adopt(rec state.RunRecord) (Process, error) {
	if !f.adopt[rec.PID] {
		return nil, errors.New("not ours")
	}
	p := &fakeProc{pid: rec.PID, started: rec.StartedAt, spec: rec.Spec, console: f.console, exited: make(chan struct{})}
	f.mu.Lock()
	f.procs[rec.Name] = append(f.procs[rec.Name], p)
	f.mu.Unlock()
	return p, nil
}

func (f *fakeLauncher) launches(name string) []*fakeProc {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*fakeProc(nil), f.procs[name]...)
}

// fast is a tuning that keeps each test in milliseconds.
var fast = Tuning{FirstBackoff: 5 * time.Millisecond, MaxBackoff: 40 * time.Millisecond, CrashLoopCount: 4, CrashLoopWindow: time.Minute, StableAfter: time.Minute}

func newSup(t *testing.T, f *fakeLauncher) (*Supervisor, state.Dir) {
	dir := state.Dir{Root: t.TempDir()}
	s := New(f, dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	s.Tuning = fast
	return s, dir
}

func vm(name, restart string) *config.VM {
	return &config.VM{Name: name, Memory: config.DefaultMemory, Supervision: config.Supervision{Autostart: true, Restart: restart, StopTimeout: config.Duration(time.Second)}}
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func state_(s *Supervisor, name string) State {
	st, _ := s.Status(name)
	return st.State
}

// Each restart policy acts on a clean and a failed exit as
// `docker run --restart` does.
func TestRestartPolicies(t *testing.T) {
	cases := []struct {
		policy  string
		exitErr error
		restart bool
	}{
		{config.RestartAlways, nil, true},
		{config.RestartAlways, errors.New("exit status 1"), true},
		{config.RestartOnFailure, nil, false},
		{config.RestartOnFailure, errors.New("exit status 1"), true},
		{config.RestartNo, nil, false},
		{config.RestartNo, errors.New("exit status 1"), false},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/%v", c.policy, c.exitErr), func(t *testing.T) {
			f := newFake(t)
			s, dir := newSup(t, f)
			if err := s.Start(context.Background(), vm("a", c.policy)); err != nil {
				t.Fatal(err)
			}
			if st := state_(s, "a"); st != Running {
				t.Fatalf("state %s after start", st)
			}
			var rec state.RunRecord
			if err := state.ReadJSON(dir.RunRecordPath("a"), &rec); err != nil || rec.BootSeconds <= 0 || rec.PID == 0 {
				t.Errorf("the run record of a ready VM lacks its boot time: %+v %v", rec, err)
			}
			f.launches("a")[0].exit(c.exitErr)
			if c.restart {
				waitFor(t, "the restart", func() bool { return len(f.launches("a")) == 2 && state_(s, "a") == Running })
				st, _ := s.Status("a")
				if st.Restarts != 1 || st.PID != 1002 {
					t.Errorf("after a restart: %+v", st)
				}
				return
			}
			waitFor(t, "stopped", func() bool { return state_(s, "a") == Stopped })
			time.Sleep(3 * fast.FirstBackoff)
			if n := len(f.launches("a")); n != 1 {
				t.Errorf("%d launches, want 1 (no restart)", n)
			}
			st, _ := s.Status("a")
			want := "powered off"
			if c.exitErr != nil {
				want = c.exitErr.Error()
			}
			if st.LastExit != want || st.PID != 0 {
				t.Errorf("status %+v, want last exit %q and no pid", st, want)
			}
			rec = state.RunRecord{}
			if err := state.ReadJSON(dir.RunRecordPath("a"), &rec); err != nil || rec.PID != 0 {
				t.Errorf("run record after the exit: %+v %v", rec, err)
			}
		})
	}
}

// Restarts back off exponentially, and a VM that keeps exiting is failed
// with its last console lines.
func TestBackoffThenCrashLoop(t *testing.T) {
	f := newFake(t)
	f.onLaunch = func(_ context.Context, p *fakeProc, n int) error {
		if n > 1 { // every restart dies at once
			go p.exit(errors.New("exit status 1"))
		}
		return nil
	}
	s, _ := newSup(t, f)
	if err := s.Start(context.Background(), vm("a", config.RestartAlways)); err != nil {
		t.Fatal(err)
	}
	f.launches("a")[0].exit(errors.New("exit status 1"))
	waitFor(t, "the crash loop", func() bool { return state_(s, "a") == Failed })
	st, _ := s.Status("a")
	if !strings.Contains(st.Failure, "crash loop: exited 4 times") || !strings.Contains(st.Failure, "kernel panic: the last line") {
		t.Errorf("failure = %q", st.Failure)
	}
	f.mu.Lock()
	times := f.times["a"]
	f.mu.Unlock()
	if len(times) != fast.CrashLoopCount {
		t.Fatalf("%d launches, want %d", len(times), fast.CrashLoopCount)
	}
	// Waits of 5, 10 and 20 ms: each at least the backoff, and growing.
	for i := 1; i < len(times); i++ {
		want := fast.FirstBackoff << (i - 1)
		if gap := times[i].Sub(times[i-1]); gap < want {
			t.Errorf("restart %d after %s, want at least %s", i, gap, want)
		}
	}
	// A failed VM is not restarted any more; start clears the failure.
	time.Sleep(3 * fast.MaxBackoff)
	if n := len(f.launches("a")); n != fast.CrashLoopCount {
		t.Errorf("a failed VM was restarted: %d launches", n)
	}
	f.onLaunch = nil
	if err := s.Start(context.Background(), vm("a", config.RestartAlways)); err != nil || state_(s, "a") != Running {
		t.Errorf("start after a crash loop: %v, %s", err, state_(s, "a"))
	}
}

// A guest that says it failed fails its start, and its hypervisor is
// stopped (not restarted: the same boot would fail again); a launch that
// fails leaves the VM failed with the reason.
func TestFailedStarts(t *testing.T) {
	f := newFake(t)
	f.onLaunch = func(_ context.Context, p *fakeProc, n int) error {
		if n == 1 {
			p.ready = errors.New("guest failed: no init")
			return nil
		}
		return errors.New("vms.a.image: not in the store")
	}
	s, _ := newSup(t, f)
	err := s.Start(context.Background(), vm("a", config.RestartAlways))
	if err == nil || !strings.Contains(err.Error(), "no init") || !f.launches("a")[0].stopped {
		t.Fatalf("not-ready start: %v, stopped %v", err, f.launches("a")[0].stopped)
	}
	if st, _ := s.Status("a"); st.State != Failed || !strings.Contains(st.Failure, "no init") {
		t.Errorf("status %+v", st)
	}
	err = s.Start(context.Background(), vm("a", config.RestartAlways))
	if st, _ := s.Status("a"); err == nil || st.State != Failed || !strings.Contains(st.Failure, "not in the store") {
		t.Errorf("failed launch: %v, %+v", err, st)
	}
	time.Sleep(3 * fast.FirstBackoff)
	if n := len(f.launches("a")); n != 2 {
		t.Errorf("a failed start was retried by the policy: %d launches", n)
	}
}

// A boot that stalls (not ready in time while its hypervisor runs on) is
// stopped and restarted as the policy says, as systemd does with a start
// timeout; with restart: no it is left failed.
func TestStalledBootRestarts(t *testing.T) {
	stall := vmm.NotReady(errors.New("the guest was not ready within 3m0s"))
	for _, c := range []struct {
		policy  string
		restart bool
	}{{config.RestartAlways, true}, {config.RestartOnFailure, true}, {config.RestartNo, false}} {
		t.Run(c.policy, func(t *testing.T) {
			f := newFake(t)
			f.onLaunch = func(_ context.Context, p *fakeProc, n int) error {
				if n == 1 {
					p.ready = stall
				}
				return nil
			}
			s, _ := newSup(t, f)
			err := s.Start(context.Background(), vm("a", c.policy))
			if !errors.Is(err, vmm.ErrNotReady) || !f.launches("a")[0].stopped {
				t.Fatalf("stalled start: %v, stopped %v", err, f.launches("a")[0].stopped)
			}
			if !c.restart {
				time.Sleep(3 * fast.FirstBackoff)
				if st, _ := s.Status("a"); st.State != Failed || len(f.launches("a")) != 1 || !strings.Contains(st.Failure, "not ready within") {
					t.Errorf("restart: no: %+v after %d launches", st, len(f.launches("a")))
				}
				return
			}
			waitFor(t, "the restart", func() bool { return len(f.launches("a")) == 2 && state_(s, "a") == Running })
			if st, _ := s.Status("a"); st.Restarts != 1 || !strings.Contains(st.LastExit, "not ready within") {
				t.Errorf("after the restart: %+v", st)
			}
		})
	}
	testutil.Report(t, testutil.FaultResult{Fault: "a VM whose boot stalls (never ready, or a health check that keeps failing; a fake hypervisor)", Trials: 3,
		Result: "stopped cleanly and restarted by its policy (always, on-failure), its last exit saying why; left failed with restart: no"})
}

// Stopping a VM whose launch is still preparing (a slow pull) cancels it.
func TestStopCancelsABoot(t *testing.T) {
	f := newFake(t)
	preparing := make(chan struct{})
	f.onLaunch = func(ctx context.Context, _ *fakeProc, _ int) error {
		close(preparing)
		<-ctx.Done()
		return ctx.Err()
	}
	s, _ := newSup(t, f)
	done := make(chan error, 1)
	go func() { done <- s.Start(context.Background(), vm("a", config.RestartAlways)) }()
	<-preparing
	if err := s.Stop("a"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("start returned %v, want it cancelled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the boot was not cancelled")
	}
	if st := state_(s, "a"); st != Stopped {
		t.Errorf("state %s, want stopped", st)
	}
}

// Adoption takes over live hypervisors, keeps their start time, and knows
// the VMs of the other records as stopped (their stale pids cleared).
func TestAdoption(t *testing.T) {
	f := newFake(t)
	s, dir := newSup(t, f)
	started := time.Now().Add(-4 * time.Minute).Truncate(time.Second)
	live, dead, stopped := vm("live", config.RestartAlways), vm("dead", config.RestartAlways), vm("stopped", config.RestartAlways)
	dir.WriteRunRecord(state.RunRecord{Name: "live", Spec: *live, PID: 4242, ProcStart: 7, StartedAt: started, BootSeconds: 6.5})
	dir.WriteRunRecord(state.RunRecord{Name: "dead", Spec: *dead, PID: 4343, ProcStart: 8, StartedAt: started})
	dir.WriteRunRecord(state.RunRecord{Name: "stopped", Spec: *stopped})
	f.adopt[4242] = true
	adopted, err := s.Adopt()
	if err != nil || len(adopted) != 1 || adopted[0] != "live" {
		t.Fatalf("adopted %v, %v", adopted, err)
	}
	waitFor(t, "the adopted VM running", func() bool { return state_(s, "live") == Running })
	st, _ := s.Status("live")
	if st.PID != 4242 || !st.StartedAt.Equal(started) || st.BootSeconds != 6.5 {
		t.Errorf("adopted status %+v, want pid 4242 started %s, booted in 6.5 s", st, started)
	}
	for _, name := range []string{"dead", "stopped"} {
		if st, ok := s.Status(name); !ok || st.State != Stopped || st.PID != 0 || st.Spec == nil {
			t.Errorf("%s: %+v %v, want known as stopped", name, st, ok)
		}
	}
	var rec state.RunRecord
	if state.ReadJSON(dir.RunRecordPath("dead"), &rec); rec.PID != 0 {
		t.Errorf("stale pid kept: %+v", rec)
	}
	// The adopted VM is watched: its exit is restarted by its policy, and
	// no second VM is started while it runs.
	if err := s.Start(context.Background(), live); err != nil || len(f.launches("live")) != 1 {
		t.Errorf("start of an adopted VM: %v, %d processes", err, len(f.launches("live")))
	}
	f.launches("live")[0].exit(errors.New("killed"))
	waitFor(t, "the adopted VM restarted", func() bool { return len(f.launches("live")) == 2 && state_(s, "live") == Running })
}

// A supervision change (restart policy) is taken without a restart.
func TestUpdateSupervision(t *testing.T) {
	f := newFake(t)
	s, _ := newSup(t, f)
	if err := s.Start(context.Background(), vm("a", config.RestartAlways)); err != nil {
		t.Fatal(err)
	}
	s.UpdateSupervision(vm("a", config.RestartNo))
	f.launches("a")[0].exit(nil)
	waitFor(t, "stopped", func() bool { return state_(s, "a") == Stopped })
	time.Sleep(3 * fast.FirstBackoff)
	if n := len(f.launches("a")); n != 1 {
		t.Errorf("%d launches: the new policy (no) was not taken", n)
	}
}

// TestSave: a saved VM is Saved (in its record too, so a new daemon knows
// it); a save that fails shuts the guest down cleanly instead and says
// why; only a running VM can be saved.
func TestSave(t *testing.T) {
	f := newFake(t)
	s, dir := newSup(t, f)
	if err := s.Start(context.Background(), vm("a", config.RestartAlways)); err != nil {
		t.Fatal(err)
	}
	out, err := s.Save("a")
	if err != nil || !out.Saved || out.Bytes != 42 {
		t.Fatalf("save: %+v %v", out, err)
	}
	if st := state_(s, "a"); st != Saved {
		t.Fatalf("after the save: %s", st)
	}
	time.Sleep(20 * time.Millisecond)
	if n := len(f.launches("a")); n != 1 {
		t.Fatalf("a saved VM was restarted (%d launches)", n)
	}
	var rec state.RunRecord
	err = state.ReadJSON(dir.RunRecordPath("a"), &rec)
	if err != nil || !rec.Saved || rec.PID != 0 {
		t.Fatalf("record after the save: %+v %v", rec, err)
	}
	s2, _ := newSup(t, f)
	s2.dir = dir
	if _, err := s2.Adopt(); err != nil {
		t.Fatal(err)
	}
	if st := state_(s2, "a"); st != Saved {
		t.Fatalf("a new supervisor sees a saved VM as %s", st)
	}
	if _, err := s.Save("a"); err == nil || !strings.Contains(err.Error(), "only a running VM") {
		t.Fatalf("saving a saved VM: %v", err)
	}

	f.onLaunch = func(_ context.Context, p *fakeProc, _ int) error {
		p.saveErr = errors.New("migration failed: no space left on device")
		return nil
	}
	if err := s.Start(context.Background(), vm("a", config.RestartAlways)); err != nil {
		t.Fatal(err)
	}
	out, err = s.Save("a")
	if err != nil || out.Saved || !strings.Contains(out.Fallback, "no space left") {
		t.Fatalf("a failing save: %+v %v", out, err)
	}
	p := f.launches("a")[1]
	if !p.stopped || state_(s, "a") != Stopped {
		t.Fatalf("a failing save did not shut the guest down cleanly: stopped=%v state=%s", p.stopped, state_(s, "a"))
	}
	if rec = (state.RunRecord{}); state.ReadJSON(dir.RunRecordPath("a"), &rec) != nil || rec.Saved {
		t.Fatal("a failed save is recorded as saved")
	}
}

// A watcher of Changes sees every state a VM goes through, each soon
// after it happens: starting and running, a crash's backoff and the
// restart, a stop, and the VM forgotten.
func TestChanges(t *testing.T) {
	f := newFake(t)
	s, _ := newSup(t, f)
	var mu sync.Mutex
	var seen []State
	done := make(chan struct{})
	go func() {
		ch := s.Changes()
		for {
			select {
			case <-done:
				return
			case <-ch:
			}
			ch = s.Changes()
			st, _ := s.Status("a")
			mu.Lock()
			if len(seen) == 0 || seen[len(seen)-1] != st.State {
				seen = append(seen, st.State)
			}
			mu.Unlock()
		}
	}()
	defer close(done)
	has := func(want State) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			return slices.Contains(seen, want)
		}
	}
	if err := s.Start(context.Background(), vm("a", config.RestartAlways)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "running seen", has(Running))
	f.launches("a")[0].exit(errors.New("exit status 1"))
	waitFor(t, "backoff seen", has(Backoff))
	waitFor(t, "the restart", func() bool { return len(f.launches("a")) == 2 && state_(s, "a") == Running })
	if err := s.Stop("a"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "stopped seen", has(Stopped))
	ch := s.Changes()
	if err := s.Forget("a"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("forgetting a VM is no change")
	}
}

// A stop during a backoff cancels the restart it waits for (the wait is
// a timer the loop owns, stopped with it), and a start then boots at
// once, not at the end of the backoff.
func TestStopCancelsABackoff(t *testing.T) {
	f := newFake(t)
	s, _ := newSup(t, f)
	s.Tuning.FirstBackoff, s.Tuning.MaxBackoff = time.Hour, time.Hour
	if err := s.Start(context.Background(), vm("a", config.RestartAlways)); err != nil {
		t.Fatal(err)
	}
	f.launches("a")[0].exit(errors.New("exit status 1"))
	waitFor(t, "the backoff", func() bool { return state_(s, "a") == Backoff })
	t0 := time.Now()
	if err := s.Stop("a"); err != nil {
		t.Fatal(err)
	}
	if st := state_(s, "a"); st != Stopped || time.Since(t0) > time.Second {
		t.Fatalf("stop during the backoff: %s after %s", st, time.Since(t0))
	}
	if err := s.Start(context.Background(), vm("a", config.RestartAlways)); err != nil {
		t.Fatal(err)
	}
	if n := len(f.launches("a")); n != 2 || state_(s, "a") != Running {
		t.Fatalf("the start after it: %d launches, %s", n, state_(s, "a"))
	}
	if err := s.Stop("a"); err != nil || !errors.Is(s.Stop("ghost"), ErrUnknownVM) {
		t.Fatalf("stop: %v; a stop of an unknown VM is not ErrUnknownVM", err)
	}
	if _, err := s.Save("a"); !errors.Is(err, ErrNotRunning) {
		t.Errorf("a save of a stopped VM: %v, want ErrNotRunning", err)
	}
}
