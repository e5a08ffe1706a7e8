// Package testvmm is a stand-in for hypervisors in the tests of the daemon
// and of what drives it (the API, microvm-kubelet): VMs whose boots,
// failures and exits a test scripts, each "process" being the test's own
// process (so a run record names a live pid). It exists because no real
// hypervisor boots fast enough, or fails on cue, for tests of the
// control paths around it; the host network the daemon applies stays
// real, in the test's namespace. Tests that boot real guests use QEMU.
package testvmm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/state"
	"microvm.dev/microvm/internal/steps"
	"microvm.dev/microvm/internal/supervisor"
	"microvm.dev/microvm/internal/vmm"
	"microvm.dev/microvm/internal/volume"
)

// Behaviour is what one launch of a VM does.
type Behaviour struct {
	// LaunchDelay is how long the launch prepares before the "hypervisor"
	// runs (an image pull); cancelling the launch ends it.
	LaunchDelay time.Duration
	// LaunchErr fails the launch after LaunchDelay (an image that cannot
	// be pulled).
	LaunchErr error
	// NeverReady keeps the guest from reporting ready: WaitReady times
	// out as a real one would.
	NeverReady bool
	// ExitAfter, when set, ends the workload that long after it is ready,
	// with ExitCode.
	ExitAfter time.Duration
	ExitCode  int
}

// Launcher launches scripted VMs; Script picks each launch's behaviour
// (nil: ready at once, running until stopped). One Launcher may serve
// several daemons in turn: a later daemon adopts the VMs still running.
type Launcher struct {
	Script func(vm *config.VM) Behaviour
	// StateDir, when set, is the daemon's state directory: each launch
	// makes the VM's data volumes there as a real launch does
	// (volume.Ensure: real ext4 images), and says what it did.
	StateDir string

	mu       sync.Mutex
	live     map[string]*Proc
	launches map[string]int
}

// Launch starts a scripted VM.
func (l *Launcher) Launch(ctx context.Context, vm *config.VM, _ func(steps.Timing)) (supervisor.Process, error) {
	var b Behaviour
	if l.Script != nil {
		b = l.Script(vm)
	}
	l.mu.Lock()
	if l.launches == nil {
		l.launches = map[string]int{}
	}
	l.launches[vm.Name]++
	l.mu.Unlock()
	if b.LaunchDelay > 0 {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("launch %s: %w", vm.Name, ctx.Err())
		case <-time.After(b.LaunchDelay):
		}
	}
	if b.LaunchErr != nil {
		return nil, b.LaunchErr
	}
	volumes := map[string]string{}
	if l.StateDir != "" {
		for _, v := range vm.Volumes {
			act, err := volume.Ensure(state.Dir{Root: l.StateDir}.VMDir(vm.Name), v)
			if err != nil {
				return nil, fmt.Errorf("vms.%s: volume %s: %w", vm.Name, v.Name, err)
			}
			volumes[v.Name] = string(act)
		}
	}
	pid := os.Getpid()
	start, err := launch.ProcStartTime(pid)
	if err != nil {
		return nil, err
	}
	p := &Proc{vm: *vm, b: b, volumes: volumes, pid: pid, start: start, started: time.Now(), exited: make(chan struct{}), ready: make(chan struct{})}
	if !b.NeverReady {
		close(p.ready)
	}
	if b.ExitAfter > 0 && !b.NeverReady {
		code := b.ExitCode
		time.AfterFunc(b.ExitAfter, func() { p.exit(&guest.WorkloadExit{Code: code}) })
	}
	l.mu.Lock()
	if l.live == nil {
		l.live = map[string]*Proc{}
	}
	l.live[vm.Name] = p
	l.mu.Unlock()
	return p, nil
}

// Adopt takes back a VM this Launcher started that still runs.
func (l *Launcher) Adopt(rec state.RunRecord) (supervisor.Process, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.live[rec.Name]
	if p == nil || p.done() {
		return nil, launch.ErrNotOurs
	}
	return p, nil
}

// Launches is how many times the VM name was launched.
func (l *Launcher) Launches(name string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.launches[name]
}

// Running says whether the VM name runs (its last launch has not ended).
func (l *Launcher) Running(name string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.live[name]
	return p != nil && !p.done()
}

// Proc is one scripted VM's "hypervisor".
type Proc struct {
	vm      config.VM
	b       Behaviour
	volumes map[string]string
	pid     int
	start   uint64
	started time.Time
	ready   chan struct{}

	mu      sync.Mutex
	exited  chan struct{}
	err     error
	balloon int64
}

func (p *Proc) exit(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.exited:
	default:
		p.err = err
		close(p.exited)
	}
}

func (p *Proc) done() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// PID is the test's own process.
func (p *Proc) PID() int { return p.pid }

// StartedAt is when the launch ended.
func (p *Proc) StartedAt() time.Time { return p.started }

// WaitReady waits for the scripted readiness, the exit, or timeout.
func (p *Proc) WaitReady(timeout time.Duration) error {
	select {
	case <-p.ready:
		return nil
	case <-p.exited:
		return fmt.Errorf("%s exited before it was ready", p.vm.Name)
	case <-time.After(timeout):
		return fmt.Errorf("%s: %w within %s", p.vm.Name, vmm.ErrNotReady, timeout)
	}
}

// Readiness is empty: the guest has no init of its own.
func (p *Proc) Readiness() string { return "" }

// Exited is closed once the VM ended.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// ExitErr is how it ended (nil: powered off).
func (p *Proc) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Stop powers the VM off.
func (p *Proc) Stop(time.Duration) error { p.exit(nil); return nil }

// Pause does nothing: nothing runs.
func (p *Proc) Pause() error { return nil }

// Resume does nothing: nothing runs.
func (p *Proc) Resume() error { return nil }

// ConsoleLog is empty.
func (p *Proc) ConsoleLog() string { return os.DevNull }

// Timings are none.
func (p *Proc) Timings() []steps.Timing { return nil }

// Volumes says what the launch did to each data volume (none without the
// Launcher's StateDir).
func (p *Proc) Volumes() map[string]string { return p.volumes }

// Boot is a cold boot.
func (p *Proc) Boot() string { return "cold boot" }

// Save is refused: there is no state to save.
func (p *Proc) Save() (supervisor.SaveInfo, error) {
	return supervisor.SaveInfo{}, errors.New("a scripted VM has no state to save")
}

// Record is the VM's run record.
func (p *Proc) Record() state.RunRecord {
	return state.RunRecord{Name: p.vm.Name, Spec: p.vm, PID: p.pid, ProcStart: p.start, StartedAt: p.started}
}

// What every scripted VM costs the host, as Measure reports it.
const (
	GuestBytes      = 400 << 20
	HypervisorBytes = 20 << 20
	HelperBytes     = 2 << 20
)

// Measure reports GuestBytes, HypervisorBytes and HelperBytes, less what
// the balloon took from the guest.
func (p *Proc) Measure() (apitypes.VMSample, error) {
	s := apitypes.VMSample{GuestBytes: GuestBytes, HypervisorBytes: HypervisorBytes, HelperBytes: HelperBytes, CPUSeconds: 1.5}
	p.mu.Lock()
	s.GuestBytes -= min(p.balloon, s.GuestBytes)
	p.mu.Unlock()
	return s, nil
}

// SetBalloon takes taken bytes from the guest at once.
func (p *Proc) SetBalloon(taken int64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.balloon = taken
	return nil
}

// Balloon is what the guest has given up.
func (p *Proc) Balloon() (int64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.balloon, nil
}
