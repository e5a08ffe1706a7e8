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
	"maps"
	"os"
	"runtime"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/hostmem"
	"microvm.dev/microvm/internal/ksm"
	"microvm.dev/microvm/internal/usage"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/hostnet"
	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/network"
	"microvm.dev/microvm/internal/plan"
	"microvm.dev/microvm/internal/radv"
	"microvm.dev/microvm/internal/resolver"
	"microvm.dev/microvm/internal/savestate"
	"microvm.dev/microvm/internal/state"
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
	apply sync.Mutex // one file's apply at a time
	// desired orders the changes of what the host is held to: a file's
	// composition or a VM's entry checked and committed together.
	desired sync.Mutex
	// netMu orders the network's reconciles.
	netMu sync.Mutex
	// vmLocks orders the changes of one VM put through the API.
	vmLocks keyedMutex
	mu      sync.Mutex
	// cfg is the applied file with the VMs put through the API; file and
	// fileData the file alone (nil before a file was applied).
	cfg      *config.Config
	file     string
	fileData []byte
	// api are the entries of the VMs put through the API, by name.
	api map[string][]byte
	// onApply, when set, is told about every apply (metrics).
	onApply func(*ApplyResult, error)
	// Tailscale advertises the VM subnets when the file asks for it (its
	// socket is the file's host.tailscale.socket).
	Tailscale tailnet.Client
	tailnet   tailnetKeeper
	stop      chan struct{}
	closed    sync.Once
	// dns answers the VMs' DNS on their gateways (nil before the first
	// apply).
	dns *resolver.Server
	// radv announces the VMs' IPv6 networks on their bridges.
	radv *radv.Advertiser
	// usage keeps the VMs' samples (usage.go), taken every sampleEvery;
	// proc is where the host's memory is read, ksm where its samepage
	// merging is set; short says the host is short of memory
	// (host.reclaim) and the VMs' memory is being taken back.
	usage       *usage.History
	sampleEvery atomic.Int64 // a time.Duration
	resample    chan struct{}
	proc        hostmem.Proc
	ksm         ksm.Dir
	short       atomic.Bool
	// pools keeps every template's pool of ready clones; poolStarting are
	// the members recorded whose put is under way (guarded by mu).
	pools        poolKeeper
	poolStarting map[string]bool
	// cloneMu orders clones' puts, so that two do not pick one index.
	cloneMu sync.Mutex
	// peers is how this daemon moves VMs to and from other hosts' (zero
	// until EnablePeers).
	peers peering
}

// OnApply registers f to be called after every apply with its result.
func (d *Daemon) OnApply(f func(*ApplyResult, error)) {
	d.mu.Lock()
	d.onApply = f
	d.mu.Unlock()
}

// New creates a daemon for env, adopting VMs that are already running.
func New(env launch.Env, log *slog.Logger) (*Daemon, error) {
	t := &templates{env: env, log: log.With("component", "templates")}
	d, err := NewWithLauncher(env, hypervisors{env: env, log: log.With("component", "launch"), templates: t}, log)
	if err != nil {
		return nil, err
	}
	t.lookup = d.VMConfig
	return d, nil
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
	api, err := state.Dir{Root: env.StateDir}.APIVMs()
	if err != nil {
		m.Close()
		adv.Close()
		return nil, err
	}
	d := &Daemon{env: env, log: log.With("component", "daemon"), sup: sup, net: m, radv: adv, boots: make(chan struct{}, max(2, runtime.NumCPU())), api: api,
		usage: usage.NewHistory(usage.DefaultWindow), resample: make(chan struct{}, 1), proc: "/proc", ksm: hostnet.KSMDir}
	d.sampleEvery.Store(int64(SampleEvery))
	// What peers were sending when the last daemon stopped is half a copy:
	// the senders kept their VMs.
	os.RemoveAll(state.Dir{Root: env.StateDir}.IncomingDir())
	if _, err := d.sup.Adopt(); err != nil {
		m.Close()
		adv.Close()
		return nil, fmt.Errorf("adopt running VMs: %w", err)
	}
	d.stop = make(chan struct{})
	d.tailnet.poke = make(chan struct{}, 1)
	d.pools.poke, d.poolStarting = make(chan struct{}, 1), map[string]bool{}
	go d.keepPools()
	go d.rotateConsoles(15 * time.Second)
	go d.measureLoop()
	go d.tailnet.run(d)
	return d, nil
}

// Close releases the daemon; VMs keep running. Closing again does nothing.
func (d *Daemon) Close() {
	d.closed.Do(d.close)
}

func (d *Daemon) close() {
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
type VMAction = apitypes.VMAction

// Phases splits an apply's wall time, in seconds.
type Phases = apitypes.Phases

// ApplyResult is the outcome of an apply.
type ApplyResult = apitypes.ApplyResult

// ErrInvalid is returned (wrapped) when the file has problems; nothing was changed.
var ErrInvalid = errors.New("the file has problems; nothing was changed")

// apiEntries are the entries of the VMs put through the API (a copy).
func (d *Daemon) apiEntries() map[string][]byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.api)
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
// the supervisor knows, without the VMs put through the API (a file's
// apply leaves them alone). Apply executes exactly this.
func (d *Daemon) Plan(cfg *config.Config) *plan.Plan {
	api := d.apiEntries()
	p := plan.Compute(cfg, d.observed(), d.planHost(cfg))
	p.VMs = slices.DeleteFunc(p.VMs, func(v plan.VMPlan) bool { return api[v.Name] != nil })
	return p
}

// observed is what the supervisor knows of every VM, for plan.Compute.
func (d *Daemon) observed() []plan.Observed {
	var out []plan.Observed
	for _, st := range d.sup.List() {
		out = append(out, plan.Observed{Name: st.Name, Spec: st.Spec, Running: st.PID != 0, Saved: st.State == supervisor.Saved})
	}
	return out
}

// Apply makes the fleet match cfg (a file, with d.Parse) by executing its
// plan: removed VMs are stopped (volumes kept), VMs whose spec changed are
// restarted, new ones created, and the network reconciled between the
// stops and the starts; it returns once every VM it started is ready. The
// VMs put through the API stay as they are.
func (d *Daemon) Apply(name string, file *config.Config) (res *ApplyResult, err error) {
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
	// The file is composed again with the VMs put through the API now (one
	// may have come since it was parsed), checked and committed in one go.
	d.desired.Lock()
	d.adoptArrived(file.Source)
	vms, ps, err := d.decide(name, file.Source, d.apiEntries(), name, func(cfg *config.Config) []plan.VMPlan { return d.Plan(cfg).VMs }, nil)
	d.desired.Unlock()
	if len(ps) > 0 {
		res.Problems = ps
		return res, ErrInvalid
	}
	if err != nil {
		return nil, err
	}

	var changes, toStart []*change
	for _, v := range vms {
		c := d.newChange(v)
		changes = append(changes, c)
		if d.teardown(c) {
			toStart = append(toStart, c)
		}
	}
	res.Phases.Stop = time.Since(t0).Seconds()
	tNet := time.Now()
	res.Network, err = d.reconcile(res)
	res.Phases.Network = time.Since(tNet).Seconds()
	if res.Network != nil {
		networkDone(changes, res.Network.Links)
	}
	for _, c := range changes {
		if c.plan.Action == plan.Remove {
			c.keptDone(d.env.StateDir)
		}
	}
	if err != nil {
		return res, err
	}
	tStart := time.Now()
	d.startAll(toStart)
	res.Phases.Start = time.Since(tStart).Seconds()
	d.pokePools()
	for _, c := range changes {
		res.VMs = append(res.VMs, *c.a)
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

// startProblems are what stops VMs of the plan from starting, found before
// anything changes: every secret of a VM that will (re)start must decrypt
// here, and its image (when the store has it) must run what the VM asks.
// Such a file (or VM) stops nothing.
func (d *Daemon) startProblems(file string, vms []plan.VMPlan) config.Problems {
	var out config.Problems
	var starting []*config.VM
	for _, v := range vms {
		if v.Action.Starts() {
			_, err := d.env.Secrets(v.Desired)
			out = append(out, launch.Problems(file, "vms."+v.Name+".secrets", err)...)
			starting = append(starting, v.Desired)
		}
	}
	return append(out, launch.ImageProblems(d.env, starting, file)...)
}

// decide makes the file (name, data) composed with the VMs put through
// the API (api) what the host is held to, if it can be: the composition
// valid, the plan's starts (of planFor) free of startProblems (named
// after problemsFile), and record, when given, done. It returns the plan's
// VMs, or the problems (nothing changed). d.desired is held.
func (d *Daemon) decide(name string, data []byte, api map[string][]byte, problemsFile string, planFor func(*config.Config) []plan.VMPlan, record func() error) ([]plan.VMPlan, config.Problems, error) {
	cfg, err := d.compose(name, data, api)
	if ps, ok := errors.AsType[config.Problems](err); ok {
		return nil, ps, nil
	}
	if err != nil {
		return nil, nil, err
	}
	vms := planFor(cfg)
	if ps := d.startProblems(problemsFile, vms); len(ps) > 0 {
		return nil, ps, nil
	}
	if record != nil {
		if err := record(); err != nil {
			return nil, nil, err
		}
	}
	d.mu.Lock()
	d.cfg, d.file, d.fileData, d.api = cfg, name, data, api
	d.mu.Unlock()
	d.sup.Touch() // the list shows the file's VMs that never started
	return vms, nil, nil
}

// teardown is the first half of one VM's plan, before the network: a
// removed VM is stopped and forgotten, an updated one stopped; a VM left
// alone takes its new supervision settings. It says whether the second
// half starts the VM.
func (d *Daemon) teardown(c *change) bool {
	switch c.plan.Action {
	case plan.Remove:
		c.stopDone(func() error { return d.forget(c.plan.Name) })
	case plan.Update:
		c.stopDone(func() error { return d.sup.Stop(c.plan.Name) })
		return c.a.Error == ""
	case plan.Create, plan.Start:
		return true
	case plan.Unchanged:
		d.sup.UpdateSupervision(c.plan.Desired)
	}
	return false
}

// reconcile makes the host's network, the VMs' DNS, their IPv6 adverts
// and the tailnet's routes match what the daemon holds now (one at a
// time: each reads the latest). Problems of the DNS and the tailnet are
// warnings in res.
func (d *Daemon) reconcile(res *ApplyResult) (*network.Result, error) {
	d.netMu.Lock()
	defer d.netMu.Unlock()
	cfg := d.applied()
	netRes, err := d.net.Apply(cfg)
	if err != nil {
		return netRes, fmt.Errorf("network: %w", err)
	}
	d.radv.Update(radv.Networks(cfg))
	d.mu.Lock()
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
	if k := cfg.Host.KSM; k != nil {
		if changed, err := d.ksm.Apply(*k); err != nil {
			d.log.Warn("the host's KSM", "err", err)
			res.Warnings = append(res.Warnings, "host.ksm: "+err.Error())
		} else if len(changed) > 0 {
			d.log.Info("the host's KSM set", "changed", changed)
		}
	}
	res.Warnings = append(res.Warnings, d.usageWarnings(cfg)...)
	return netRes, nil
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

// startAll boots the changes' VMs in parallel (at most cap(d.boots) at
// once) and records each one's outcome and timings.
func (d *Daemon) startAll(changes []*change) {
	var wg sync.WaitGroup
	for _, c := range changes {
		wg.Go(func() {
			d.boots <- struct{}{}
			defer func() { <-d.boots }()
			d.started(c, d.sup.Start(context.Background(), c.plan.Desired))
		})
	}
	wg.Wait()
}

// started records a start's outcome, timings and what it did.
func (d *Daemon) started(c *change, err error) {
	if err != nil {
		c.a.Error = err.Error()
	}
	st, ok := d.sup.Status(c.plan.Name)
	if !ok {
		return
	}
	c.a.Steps = st.Steps
	if err == nil {
		c.a.BootSeconds, c.a.PrepareSeconds = st.BootSeconds, st.PrepareSeconds
		c.startDone(d.env.StateDir, d.sup.LaunchVolumes(c.plan.Name), st.Boot)
	}
}

// List reports every VM: each the supervisor knows, and each VM of the
// applied file it does not (never started: autostart is off) as created,
// as `docker ps -a` lists containers that never ran. By name.
func (d *Daemon) List() []supervisor.Status {
	out := d.sup.List()
	for i := range out {
		out[i] = d.statusOf(out[i])
	}
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
		return d.statusOf(st), true
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
type StopResult = apitypes.StopResult

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
