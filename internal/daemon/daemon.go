// Package daemon is `microvm daemon`: it makes the host match the config
// file and keeps it there. It adopts the VMs a previous daemon started,
// applies files (validate first; then stop removed and changed VMs,
// reconcile the network, boot new and changed VMs in parallel), and serves
// the API the command line uses. Stopping the daemon never stops a VM.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"time"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/hostnet"
	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/network"
	"microvm.dev/microvm/internal/plan"
	"microvm.dev/microvm/internal/radv"
	"microvm.dev/microvm/internal/resolver"
	"microvm.dev/microvm/internal/savestate"
	"microvm.dev/microvm/internal/state"
	"microvm.dev/microvm/internal/steps"
	"microvm.dev/microvm/internal/supervisor"
	"microvm.dev/microvm/internal/tailnet"
	"microvm.dev/microvm/internal/vmm/backends"
)

// Daemon is the running daemon.
type Daemon struct {
	env launch.Env
	log *slog.Logger
	// boots limits how many VMs boot at once: emulated or CPU-bound boots
	// started all together only slow each other down.
	boots chan struct{}
	sup   *supervisor.Supervisor
	net   *network.Manager
	apply sync.Mutex // one apply at a time
	mu    sync.Mutex
	cfg   *config.Config
	file  string
	// onApply, when set, is told about every apply (metrics).
	onApply func(*ApplyResult, error)
	// Tailscale advertises the VM subnets when the file asks for it (its
	// socket is the file's host.tailscale.socket).
	Tailscale tailnet.Client
	tailnet   tailnetKeeper
	stop      chan struct{}
	// dns answers the VMs' DNS on their gateways (nil before the first
	// apply).
	dns *resolver.Server
	// radv announces the VMs' IPv6 networks on their bridges.
	radv *radv.Advertiser
}

// OnApply registers f to be called after every apply with its result.
func (d *Daemon) OnApply(f func(*ApplyResult, error)) {
	d.mu.Lock()
	d.onApply = f
	d.mu.Unlock()
}

// New creates a daemon for env, adopting VMs that are already running.
func New(env launch.Env, log *slog.Logger) (*Daemon, error) {
	return NewWithLauncher(env, hypervisors{env: env, log: log.With("component", "launch")}, log)
}

// NewWithLauncher is New with the supervisor's VMs launched by l (tests
// give a fake: the host network is real, the hypervisors are not).
func NewWithLauncher(env launch.Env, l supervisor.Launcher, log *slog.Logger) (*Daemon, error) {
	m, err := network.New(env.NetNS, hostnet.Options{TAPOwner: env.TAPOwner()})
	if err != nil {
		return nil, err
	}
	m.OwnTAPs(env.TAPOwners)
	adv, err := radv.New(env.NetNS, log.With("component", "radv"))
	if err != nil {
		m.Close()
		return nil, err
	}
	sup := supervisor.New(l, state.Dir{Root: env.StateDir}, log.With("component", "supervisor"))
	d := &Daemon{env: env, log: log.With("component", "daemon"), sup: sup, net: m, radv: adv, boots: make(chan struct{}, max(2, runtime.NumCPU()))}
	if _, err := d.sup.Adopt(); err != nil {
		m.Close()
		adv.Close()
		return nil, fmt.Errorf("adopt running VMs: %w", err)
	}
	d.stop = make(chan struct{})
	d.tailnet.poke = make(chan struct{}, 1)
	go d.rotateConsoles(15 * time.Second)
	go d.tailnet.run(d)
	return d, nil
}

// Close releases the daemon; VMs keep running.
func (d *Daemon) Close() {
	close(d.stop)
	d.net.Close()
	d.radv.Close()
	d.mu.Lock()
	if d.dns != nil {
		d.dns.Close()
	}
	d.mu.Unlock()
}

// rotateConsoles keeps every running VM's console log under
// launch.MaxConsoleLog (copy and truncate; the previous part in
// console.log.1), for backends that write it in append mode.
func (d *Daemon) rotateConsoles(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
		}
		d.snapshotDue()
		for _, st := range d.sup.List() {
			if st.State != supervisor.Running || st.Spec == nil {
				continue
			}
			if b, err := backends.Get(st.Spec.Hypervisor); err != nil || !b.Capabilities().AppendsConsole {
				continue
			}
			if rotated, err := launch.RotateConsole(d.ConsoleLog(st.Name), launch.MaxConsoleLog); err != nil {
				d.log.Error("rotate console log", "vm", st.Name, "err", err)
			} else if rotated {
				d.log.Info("console log rotated", "vm", st.Name)
			}
		}
	}
}

// Supervisor gives access to the VMs.
func (d *Daemon) Supervisor() *supervisor.Supervisor { return d.sup }

// VMAction is what an apply did to one VM.
type VMAction struct {
	Name   string `json:"name"`
	Action string `json:"action"` // the plan's action done: created, started, restarted, removed, defined, unchanged
	Error  string `json:"error,omitempty"`
	// StopSeconds is how long the old VM took to shut down (restarted, removed).
	StopSeconds float64 `json:"stopSeconds,omitempty"`
	// PrepareSeconds is how long the start took before the hypervisor ran.
	PrepareSeconds float64 `json:"prepareSeconds,omitempty"`
	// Steps are the launch's steps, each timed (started VMs).
	Steps []steps.Timing `json:"steps,omitempty"`
	// BootSeconds is how long the VM took to become ready.
	BootSeconds float64 `json:"bootSeconds,omitempty"`
}

// Started says whether the apply booted the VM (created, started or
// restarted it).
func (a VMAction) Started() bool {
	for _, act := range []plan.Action{plan.Create, plan.Start, plan.Update} {
		if a.Action == act.Past() {
			return true
		}
	}
	return false
}

// Phases splits an apply's wall time, in seconds.
type Phases struct {
	// Parse is reading and validating the file (ApplyFile only).
	Parse float64 `json:"parse"`
	// Stop is stopping removed and changed VMs (their clean shutdowns).
	Stop float64 `json:"stop"`
	// Network is reconciling bridges, TAPs and the firewall.
	Network float64 `json:"network"`
	// Start is starting new and changed VMs until all are ready.
	Start float64 `json:"start"`
}

// ApplyResult is the outcome of an apply.
type ApplyResult struct {
	File     string          `json:"file"`
	Problems config.Problems `json:"problems,omitempty"`
	VMs      []VMAction      `json:"vms"`
	Network  *network.Result `json:"network,omitempty"`
	Seconds  float64         `json:"seconds"`
	Phases   Phases          `json:"phases"`
	// Warnings are problems that did not fail the apply.
	Warnings []string `json:"warnings,omitempty"`
}

// ErrInvalid is returned (wrapped) when the file has problems; nothing was changed.
var ErrInvalid = errors.New("the file has problems; nothing was changed")

// Parse validates a file against this host.
func (d *Daemon) Parse(name string, data []byte) (*config.Config, error) {
	opts, err := d.net.Host().HostOptions(runtime.NumCPU())
	if err != nil {
		return nil, err
	}
	return config.Parse(name, data, opts)
}

// ApplyFile validates data and applies it. A file with problems changes
// nothing and returns them with ErrInvalid.
func (d *Daemon) ApplyFile(name string, data []byte) (*ApplyResult, error) {
	t0 := time.Now()
	cfg, err := d.Parse(name, data)
	var ps config.Problems
	if errors.As(err, &ps) {
		return &ApplyResult{File: name, Problems: ps, VMs: []VMAction{}}, ErrInvalid
	}
	if err != nil {
		return nil, err
	}
	parse := time.Since(t0).Seconds()
	res, err := d.Apply(name, cfg)
	if res != nil {
		res.Phases.Parse = parse
		res.Seconds += parse
	}
	return res, err
}

// Plan is what applying cfg would do now: plan.Compute against the VMs
// the supervisor knows. Apply executes exactly this.
func (d *Daemon) Plan(cfg *config.Config) *plan.Plan {
	var observed []plan.Observed
	for _, st := range d.sup.List() {
		observed = append(observed, plan.Observed{Name: st.Name, Spec: st.Spec, Running: st.PID != 0, Saved: st.State == supervisor.Saved})
	}
	return plan.Compute(cfg, observed)
}

// Apply makes the fleet match cfg by executing its plan: removed VMs are
// stopped (volumes kept), VMs whose spec changed are restarted, new ones
// created, and the network reconciled between the stops and the starts.
func (d *Daemon) Apply(name string, cfg *config.Config) (res *ApplyResult, err error) {
	d.apply.Lock()
	defer d.apply.Unlock()
	defer func() {
		d.mu.Lock()
		f := d.onApply
		d.mu.Unlock()
		if f != nil && res != nil {
			f(res, err)
		}
	}()
	t0 := time.Now()
	res = &ApplyResult{File: name, VMs: []VMAction{}}
	p := d.Plan(cfg)
	// Every secret of a VM that will (re)start must decrypt here, and its
	// image (when the store has it) must run what the VM asks, before
	// anything changes: such a file stops nothing.
	var starting []*config.VM
	for _, v := range p.VMs {
		if v.Action.Starts() {
			_, err := d.env.Secrets(v.Desired)
			res.Problems = append(res.Problems, launch.Problems(name, "vms."+v.Name+".secrets", err)...)
			starting = append(starting, v.Desired)
		}
	}
	res.Problems = append(res.Problems, launch.ImageProblems(d.env, starting, name)...)
	if len(res.Problems) > 0 {
		return res, ErrInvalid
	}
	var toStart []*config.VM
	actions := map[string]*VMAction{}
	for _, v := range p.VMs {
		a := &VMAction{Name: v.Name, Action: v.Action.Past()}
		actions[v.Name] = a
		switch v.Action {
		case plan.Remove:
			a.StopSeconds, a.Error = timed(func() error { return d.forget(v.Name) })
		case plan.Update:
			if a.StopSeconds, a.Error = timed(func() error { return d.sup.Stop(v.Name) }); a.Error == "" {
				toStart = append(toStart, v.Desired)
			}
		case plan.Create, plan.Start:
			toStart = append(toStart, v.Desired)
		case plan.Unchanged:
			d.sup.UpdateSupervision(v.Desired)
		}
	}
	res.Phases.Stop = time.Since(t0).Seconds()
	tNet := time.Now()
	netRes, err := d.net.Apply(cfg)
	res.Phases.Network = time.Since(tNet).Seconds()
	res.Network = netRes
	if err != nil {
		return res, fmt.Errorf("network: %w", err)
	}
	d.mu.Lock()
	d.cfg, d.file = cfg, name
	d.sup.Touch() // the list shows the file's VMs that never started
	d.radv.Update(radv.Networks(cfg))
	dns, err := resolver.ForFleet(d.dns, cfg, d.env.NetNS, d.log.With("component", "dns"))
	d.dns = dns
	d.mu.Unlock()
	if err != nil {
		// The VMs boot anyway; names outside the fleet still resolve where
		// the guest's own resolver differs.
		d.log.Warn("the VMs' DNS", "err", err)
		res.Warnings = append(res.Warnings, "dns: "+err.Error())
	}
	d.syncTailnet(cfg, res)
	tStart := time.Now()
	d.startAll(toStart, actions)
	res.Phases.Start = time.Since(tStart).Seconds()
	for _, a := range actions {
		res.VMs = append(res.VMs, *a)
	}
	sort.Slice(res.VMs, func(i, j int) bool { return res.VMs[i].Name < res.VMs[j].Name })
	res.Seconds = time.Since(t0).Seconds()
	for _, a := range res.VMs {
		if a.Error != "" {
			return res, fmt.Errorf("%s: %s", a.Name, a.Error)
		}
	}
	d.log.Info("applied", "file", name, "seconds", res.Seconds)
	return res, nil
}

// timed runs f and returns how long it took and its error's text.
func timed(f func() error) (float64, string) {
	t := time.Now()
	err := f()
	if err != nil {
		return time.Since(t).Seconds(), err.Error()
	}
	return time.Since(t).Seconds(), ""
}

// startAll boots vms in parallel (at most cap(d.boots) at once) and records
// each one's outcome and timings in actions.
func (d *Daemon) startAll(vms []*config.VM, actions map[string]*VMAction) {
	var wg sync.WaitGroup
	for _, vm := range vms {
		a := actions[vm.Name]
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.boots <- struct{}{}
			defer func() { <-d.boots }()
			err := d.sup.Start(context.Background(), vm)
			if err != nil {
				a.Error = err.Error()
			}
			if st, ok := d.sup.Status(vm.Name); ok {
				a.Steps = st.Steps
				if err == nil {
					a.BootSeconds, a.PrepareSeconds = st.BootSeconds, st.PrepareSeconds
				}
			}
		}()
	}
	wg.Wait()
}

// List reports every VM: each the supervisor knows, and each VM of the
// applied file it does not (never started: autostart is off) as created,
// as `docker ps -a` lists containers that never ran. By name.
func (d *Daemon) List() []supervisor.Status {
	out := d.sup.List()
	known := map[string]bool{}
	for _, st := range out {
		known[st.Name] = true
	}
	cfg := d.applied()
	if cfg == nil {
		return out
	}
	for _, vm := range cfg.VMs {
		if !known[vm.Name] {
			out = append(out, defined(vm))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Status reports one VM as List does.
func (d *Daemon) Status(name string) (supervisor.Status, bool) {
	if st, ok := d.sup.Status(name); ok {
		return st, true
	}
	if vm := d.VMConfig(name); vm != nil {
		return defined(vm), true
	}
	return supervisor.Status{}, false
}

// Stop shuts a VM down cleanly; one of the applied file that never
// started is stopped already.
func (d *Daemon) Stop(name string) error {
	if _, known := d.sup.Status(name); !known && d.VMConfig(name) != nil {
		return nil
	}
	return d.sup.Stop(name)
}

// defined is the status of a VM of the applied file never started.
func defined(vm *config.VM) supervisor.Status {
	return supervisor.Status{Name: vm.Name, State: supervisor.Created, Spec: vm, SpecHash: vm.SpecHash()}
}

// Save saves a running VM's state (stop --save): its next start resumes
// it. A VM whose save fails is shut down cleanly instead, and the
// outcome says why.
func (d *Daemon) Save(name string) (supervisor.SaveOutcome, error) {
	return d.sup.Save(name)
}

// StopResult is how one VM ended in StopAll.
type StopResult struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
	// Saved says its state was saved; Fallback says why a VM that was to
	// be saved was shut down instead.
	Saved    bool   `json:"saved,omitempty"`
	Fallback string `json:"fallback,omitempty"`
	Error    string `json:"error,omitempty"`
}

// StopAll shuts every running VM down cleanly, all at once, each within
// its stopTimeout (the host is shutting down: unsynced data must reach the
// volumes), or with save saves each one that can be saved and shuts the
// others down. They stay stopped (or saved); the next daemon boots the
// autostart ones and resumes the saved ones.
func (d *Daemon) StopAll(save bool) []StopResult {
	var out []StopResult
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, st := range d.sup.List() {
		if st.PID == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := StopResult{Name: st.Name}
			r.Seconds, r.Error = timed(func() error {
				if !save || st.State != supervisor.Running {
					return d.sup.Stop(st.Name)
				}
				o, err := d.sup.Save(st.Name)
				r.Saved, r.Fallback = o.Saved, o.Fallback
				return err
			})
			mu.Lock()
			out = append(out, r)
			mu.Unlock()
		}()
	}
	wg.Wait()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	d.log.Info("stopped every VM", "vms", len(out), "save", save)
	return out
}

// forget stops name and drops it and its saved state (the guest's memory
// is not kept for a VM that is gone); its volumes stay.
func (d *Daemon) forget(name string) error {
	if err := d.sup.Forget(name); err != nil {
		return err
	}
	return savestate.Of(state.Dir{Root: d.env.StateDir}.VMDir(name)).Drop()
}

// VMConfig returns a VM of the applied file.
func (d *Daemon) VMConfig(name string) *config.VM {
	if cfg := d.applied(); cfg != nil {
		return cfg.VM(name)
	}
	return nil
}

// applied is the applied file (nil before the first apply).
func (d *Daemon) applied() *config.Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

// Remove forgets a VM (stopping it) and, with purge, deletes its directory
// with its volumes. A VM still in the applied file is refused.
func (d *Daemon) Remove(name string, purge bool) error {
	if d.VMConfig(name) != nil {
		return fmt.Errorf("%s is in the applied file; remove it from the file and apply", name)
	}
	if err := d.forget(name); err != nil {
		return err
	}
	if purge {
		return os.RemoveAll(state.Dir{Root: d.env.StateDir}.VMDir(name))
	}
	return nil
}

// DaemonLog is the daemon's own log file (text, rotated by size).
func DaemonLog(stateDir string) string { return filepath.Join(stateDir, "log", "daemon.log") }

// DaemonLog is this daemon's own log file.
func (d *Daemon) DaemonLog() string { return DaemonLog(d.env.StateDir) }

// ConsoleSocket is the unix socket of name's interactive serial console.
func (d *Daemon) ConsoleSocket(name string) string { return d.env.Layout(name).ConsoleSocket() }

// ConsoleLog is the path of a VM's console log.
func (d *Daemon) ConsoleLog(name string) string { return d.env.Layout(name).ConsoleLog() }
