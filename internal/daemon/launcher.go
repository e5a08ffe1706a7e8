package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/hostmem"
	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/state"
	"microvm.dev/microvm/internal/steps"
	"microvm.dev/microvm/internal/supervisor"
	"microvm.dev/microvm/internal/vmm"
)

// hypervisors is the supervisor's launcher of real hypervisors; what a
// launch warns of goes to log; a clone's template is made by templates.
type hypervisors struct {
	env       launch.Env
	log       *slog.Logger
	templates *templates
}

// Launch prepares vm and starts its hypervisor (a clone's from its
// template's saved state, made first when it has to be).
func (h hypervisors) Launch(ctx context.Context, vm *config.VM, observe func(steps.Timing)) (supervisor.Process, error) {
	if vm.Template {
		return nil, fmt.Errorf("vms.%s: a template is booted only to be saved for its clones, never run", vm.Name)
	}
	prepare := func() (*launch.Prepared, error) { return launch.Prepare(ctx, h.env, vm, observe) }
	var p *launch.Prepared
	var err error
	if vm.From != "" {
		p, err = h.templates.prepareClone(ctx, vm, prepare)
	} else {
		p, err = prepare()
	}
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
	// What it booted, not what the image's name points at now.
	r.Started, r.Image = rec.StartedAt, rec.Image
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

func (p process) Volumes() map[string]string {
	out := map[string]string{}
	for name, act := range p.r.Prepared.Volumes {
		out[name] = string(act)
	}
	return out
}

// Save saves the guest's state (launch.Running.Save: its disks synced
// first) and ends its hypervisor.
func (p process) Save() (supervisor.SaveInfo, error) {
	res, err := p.r.Save()
	return supervisor.SaveInfo{Bytes: res.Bytes, Seconds: res.Seconds}, err
}

// WaitReady waits until the guest is ready for its workload
// (launch.Running.AwaitReady: the ready line, its clock after a resume,
// its healthCheck), within timeout in all.
func (p process) WaitReady(timeout time.Duration) error {
	_, err := p.r.AwaitReady(timeout, nil)
	return err
}

// Measure is the VM's memory on the host and its CPU time, read from
// /proc: the hypervisor's, and its virtiofsd's (found by its socket).
func (p process) Measure() (apitypes.VMSample, error) {
	proc := hostmem.Proc("/proc")
	pid := p.r.Process.Pid
	var helpers []int
	for _, s := range p.r.Prepared.Launch.Shares {
		if s.VirtiofsSocket != "" {
			h, err := proc.Helpers("virtiofsd", s.VirtiofsSocket)
			if err != nil {
				return apitypes.VMSample{}, err
			}
			helpers = append(helpers, h...)
		}
	}
	mem, err := proc.Memory(pid, helpers, int64(p.r.Prepared.VM.Memory))
	if err != nil {
		return apitypes.VMSample{}, err
	}
	cpu, err := proc.CPUSeconds(append([]int{pid}, helpers...)...)
	if err != nil {
		return apitypes.VMSample{}, err
	}
	return apitypes.VMSample{GuestBytes: mem.Guest, HypervisorBytes: mem.Hypervisor, HelperBytes: mem.Helpers, CPUSeconds: cpu}, nil
}

// ballooner is the VM's backend's balloon control.
func (p process) ballooner() (vmm.Ballooner, error) {
	b, ok := p.r.Prepared.Backend.(vmm.Ballooner)
	if !ok {
		return nil, fmt.Errorf("%s has no balloon control", p.r.Prepared.Backend.Name())
	}
	return b, nil
}

// SetBalloon has the guest give up taken bytes of its memory.
func (p process) SetBalloon(taken int64) error {
	b, err := p.ballooner()
	if err != nil {
		return err
	}
	return b.SetBalloon(p.r.Prepared.Launch, int64(p.r.Prepared.VM.Memory), taken)
}

// Balloon is what the guest has given up.
func (p process) Balloon() (int64, error) {
	b, err := p.ballooner()
	if err != nil {
		return 0, err
	}
	return b.Balloon(p.r.Prepared.Launch, int64(p.r.Prepared.VM.Memory))
}
