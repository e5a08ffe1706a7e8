package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/health"
	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/state"
	"microvm.dev/microvm/internal/steps"
	"microvm.dev/microvm/internal/supervisor"
)

// hypervisors is the supervisor's launcher of real hypervisors; what a
// launch warns of goes to log.
type hypervisors struct {
	env launch.Env
	log *slog.Logger
}

// Launch prepares vm and starts its hypervisor.
func (h hypervisors) Launch(ctx context.Context, vm *config.VM, observe func(steps.Timing)) (supervisor.Process, error) {
	p, err := launch.Prepare(ctx, h.env, vm, observe)
	if err != nil {
		return nil, err
	}
	for _, w := range p.Warnings {
		h.log.Warn(w, "vm", vm.Name)
	}
	r, err := launch.Start(ctx, p)
	if err != nil {
		return nil, err
	}
	return &process{r, h.env}, nil
}

// Adopt takes over the hypervisor rec names.
func (h hypervisors) Adopt(rec state.RunRecord) (supervisor.Process, error) {
	spec := rec.Spec
	r, err := launch.Adopt(h.env, &spec, rec.PID, rec.ProcStart)
	if err != nil {
		return nil, err
	}
	r.Started = rec.StartedAt
	return &process{r, h.env}, nil
}

// process is a launched hypervisor as a supervisor.Process (a pointer:
// the supervisor compares processes, and Env is not comparable); env says
// where its health check and SSH reach it.
type process struct {
	r   *launch.Running
	env launch.Env
}

func (p process) PID() int                   { return p.r.Process.Pid }
func (p process) StartedAt() time.Time       { return p.r.Started }
func (p process) Exited() <-chan struct{}    { return p.r.Exited }
func (p process) ExitErr() error             { return p.r.ExitErr }
func (p process) Stop(t time.Duration) error { return p.r.Stop(t) }
func (p process) Pause() error               { return p.r.Pause() }
func (p process) Resume() error              { return p.r.Resume() }
func (p process) Record() state.RunRecord    { return p.r.Record() }
func (p process) Readiness() string          { return p.r.Ready.Readiness() }
func (p process) ConsoleLog() string         { return p.r.Prepared.Launch.ConsoleLog }
func (p process) Timings() []steps.Timing    { return p.r.Prepared.Timings() }
func (p process) Boot() string               { return p.r.Prepared.Boot.String() }

// Save asks the guest to sync its disks (so a saved state that is later
// dropped loses nothing written before the save), then saves it.
func (p process) Save() (supervisor.SaveInfo, error) {
	if err := inGuest(p.env.StateDir, p.env.NetNS, p.r.Prepared.VM, "sync", 30*time.Second); err != nil {
		return supervisor.SaveInfo{}, fmt.Errorf("sync the guest's disks before the save: %w", err)
	}
	res, err := p.r.Save()
	return supervisor.SaveInfo{Bytes: res.Bytes, Seconds: res.Seconds}, err
}

// WaitReady waits for the guest's ready line and then, for a VM with a
// healthCheck, for the check to pass, within timeout in all.
func (p process) WaitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	if _, err := p.r.WaitReady(timeout, nil); err != nil {
		return err
	}
	if p.r.Prepared.Boot.Resume != nil {
		if err := setGuestClock(p.env.StateDir, p.env.NetNS, p.r.Prepared.VM); err != nil {
			return fmt.Errorf("resumed, but its clock could not be set: %w", err)
		}
	}
	return health.Wait(p.env.NetNS, p.r.Prepared.VM, deadline, p.r.Exited)
}
