// Package deploy is the daemon's GitOps loop: it fetches the fleet's git
// branch on an interval and on demand, turns each new commit into a
// generation, checks its signature and its config, applies it (only the
// VMs that changed restart), health-checks the VMs it started and rolls
// back to the last good generation when they fail, and runs a post-deploy
// hook. A deploy interrupted by a crash is completed or rolled back when
// the daemon starts again.
package deploy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"microvm.dev/microvm/internal/apitypes"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/daemon"
	"microvm.dev/microvm/internal/generation"
	"microvm.dev/microvm/internal/gitsync"
	"microvm.dev/microvm/internal/health"
	"microvm.dev/microvm/internal/supervisor"
)

// Options configure the loop.
type Options struct {
	// Mirror is the repository; Branch and Path say what is deployed.
	Mirror *gitsync.Mirror
	Branch string
	Path   string
	// Interval between polls (default 60 s).
	Interval time.Duration
	// HealthTimeout is how long changed and new VMs have to become ready
	// and pass their health checks (default 120 s).
	HealthTimeout time.Duration
	// Keys, when set, are the only signers whose commits are deployed.
	Keys *gitsync.Keys
	// Hook is a shell command run after every deploy (optional).
	Hook string
	// HostName picks this host's VMs when the file names hosts.
	HostName string
	// NetNS is where health checks are made from ("" = here).
	NetNS string
}

// Engine runs deploys for one daemon.
type Engine struct {
	d    *daemon.Daemon
	gens *generation.Store
	o    Options
	log  *slog.Logger

	deploying sync.Mutex // one deploy at a time
	trigger   chan struct{}
	hooks     sync.WaitGroup

	mu        sync.Mutex
	counters  Counters
	suspended bool
	nextPoll  time.Time
	lastFetch time.Time
	fetchErr  string
	failures  int
	lastHead  string
}

// Counters count what the loop did since the daemon started.
type Counters struct {
	Deploys     int `json:"deploys"`
	Failures    int `json:"failures"`
	Rollbacks   int `json:"rollbacks"`
	FetchErrors int `json:"fetchErrors"`
}

// Counters returns the loop's counters.
func (e *Engine) Counters() Counters {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.counters
}

func (e *Engine) count(f func(*Counters)) {
	e.mu.Lock()
	f(&e.counters)
	e.mu.Unlock()
}

// New returns the engine; Run runs it.
func New(d *daemon.Daemon, gens *generation.Store, o Options, log *slog.Logger) *Engine {
	if o.Interval <= 0 {
		o.Interval = time.Minute
	}
	if o.HealthTimeout <= 0 {
		o.HealthTimeout = 2 * time.Minute
	}
	if o.Branch == "" {
		o.Branch = "main"
	}
	return &Engine{d: d, gens: gens, o: o, log: log.With("component", "deploy"), trigger: make(chan struct{}, 1)}
}

// Recover puts the host back in a known state at start: a deploy that was
// interrupted is completed (and health-checked, so it may roll back); else
// the last good generation is applied (adopted VMs keep running).
func (e *Engine) Recover(ctx context.Context) error {
	e.deploying.Lock()
	defer e.deploying.Unlock()
	gens, err := e.gens.List()
	if err != nil {
		return err
	}
	latest := generation.Latest(gens)
	if latest != nil && latest.Status == generation.Applying {
		e.log.Warn("completing a deploy interrupted by a restart", "generation", latest.Number, "commit", short(latest.Commit.Hash))
		e.finish(ctx, latest, gens)
		return nil
	}
	if good := generation.LastGood(gens); good != nil {
		cfg, err := e.parse(good)
		if err != nil {
			return fmt.Errorf("generation %d: %w", good.Number, err)
		}
		if _, err := e.d.Apply(label(good), cfg); err != nil {
			e.log.Error("re-applying the running generation", "generation", good.Number, "err", err)
		}
	}
	return nil
}

// Run polls until ctx ends: every Interval, on Trigger, and with backoff
// (up to the interval) while the remote cannot be reached.
func (e *Engine) Run(ctx context.Context) {
	for {
		e.mu.Lock()
		suspended := e.suspended
		e.mu.Unlock()
		if !suspended {
			if _, err := e.Sync(ctx); err != nil && ctx.Err() == nil {
				e.log.Error("deploy", "err", err)
			}
		}
		wait := e.o.Interval
		e.mu.Lock()
		if e.failures > 0 {
			wait = min(e.o.Interval, time.Second<<min(e.failures, 6))
		}
		e.nextPoll = time.Now().Add(wait)
		e.mu.Unlock()
		select {
		case <-ctx.Done():
			e.hooks.Wait()
			return
		case <-time.After(wait):
		case <-e.trigger:
		}
	}
}

// Trigger asks for a fetch now.
func (e *Engine) Trigger() {
	select {
	case e.trigger <- struct{}{}:
	default:
	}
}

// Suspend stops polling (a manual trigger or rollback still works).
func (e *Engine) Suspend(on bool) {
	e.mu.Lock()
	e.suspended = on
	e.mu.Unlock()
	e.log.Info("polling", "suspended", on)
}

// Sync fetches the branch and deploys its head if no generation tried it
// yet. It returns the new generation, or nil when there was nothing new.
func (e *Engine) Sync(ctx context.Context) (*generation.Generation, error) {
	head, err := e.o.Mirror.Fetch(ctx)
	e.mu.Lock()
	e.lastFetch = time.Now()
	if err != nil {
		e.failures++
		e.counters.FetchErrors++
		e.fetchErr = err.Error()
		e.mu.Unlock()
		return nil, err
	}
	e.failures, e.fetchErr, e.lastHead = 0, "", head.Hash
	e.mu.Unlock()
	e.deploying.Lock()
	defer e.deploying.Unlock()
	gens, err := e.gens.List()
	if err != nil {
		return nil, err
	}
	if skip(gens, head.Hash) {
		return nil, nil
	}
	return e.deploy(ctx, head, gens)
}

// skip says whether head is not to be deployed: it is what runs (or was
// just tried), its last attempt was refused or rolled back (it would fail
// the same way), or the operator rolled back from it by hand since. A
// branch force-pushed back to an older good commit is deployed.
func skip(gens []*generation.Generation, head string) bool {
	if latest := generation.Latest(gens); latest != nil && latest.Commit.Hash == head {
		return true
	}
	last := -1
	for i, g := range gens {
		if g.Commit.Hash == head && !g.Manual {
			last = i
		}
	}
	if last < 0 {
		return false
	}
	if st := gens[last].Status; st == generation.Failed || st == generation.RolledBack {
		return true
	}
	for _, g := range gens[last+1:] {
		if g.Manual {
			return true
		}
	}
	return false
}

// deploy makes a generation of commit c and applies it.
func (e *Engine) deploy(ctx context.Context, c gitsync.Commit, gens []*generation.Generation) (*generation.Generation, error) {
	g := &generation.Generation{Number: generation.Next(gens), Commit: c, Ref: e.o.Branch, Path: e.o.Path, Started: time.Now().UTC()}
	log := e.log.With("generation", g.Number, "commit", short(c.Hash))
	refuse := func(err error) (*generation.Generation, error) {
		e.count(func(c *Counters) { c.Deploys++; c.Failures++ })
		g.Status, g.Error, g.Finished = generation.Failed, err.Error(), time.Now().UTC()
		g.VMsTotal, g.VMsActive = e.counts(nil)
		if serr := e.gens.Save(g); serr != nil {
			return g, serr
		}
		log.Error("refused; the running generation stays", "err", err)
		e.hook(g)
		return g, err
	}
	if e.o.Keys != nil {
		who, err := e.o.Mirror.Verify(c.Hash, e.o.Keys)
		if err != nil {
			return refuse(fmt.Errorf("signature: %w", err))
		}
		g.Signer = who
	}
	data, err := e.o.Mirror.ReadFile(c.Hash, e.o.Path)
	if err != nil {
		return refuse(err)
	}
	g.Config = string(data)
	if _, err := e.parse(g); err != nil {
		return refuse(err)
	}
	g.Status = generation.Applying
	if err := e.gens.Save(g); err != nil {
		return g, err
	}
	log.Info("deploying", "message", firstLine(c.Message), "author", c.Author)
	e.finish(ctx, g, gens)
	if g.Status != generation.Succeeded {
		return g, errors.New(g.Error)
	}
	return g, nil
}

// finish applies g (already saved as applying), health-checks it and
// records the outcome, rolling back to the last good generation on failure.
func (e *Engine) finish(ctx context.Context, g *generation.Generation, gens []*generation.Generation) {
	log := e.log.With("generation", g.Number, "commit", short(g.Commit.Hash))
	cfg, err := e.parse(g)
	if err == nil {
		err = e.handOver(ctx, g, generation.LastGood(gens))
	}
	var res *daemon.ApplyResult
	if err == nil {
		res, err = e.d.Apply(label(g), cfg)
	}
	if err == nil {
		err = e.healthy(ctx, cfg, res)
	}
	g.Finished = time.Now().UTC()
	e.count(func(c *Counters) {
		c.Deploys++
		if err != nil {
			c.Failures++
		}
	})
	if err == nil {
		g.Status = generation.Succeeded
		g.VMsTotal, g.VMsActive = e.counts(cfg)
		g.Images = e.booted(log, cfg)
		if prev := generation.LastGood(gens); prev != nil && prev.Number != g.Number {
			g.Moved = e.moved(prev, cfg, g.Images)
			for vm, was := range g.Moved {
				log.Warn("image tag moved since the last good generation", "vm", vm, "image", cfgImage(cfg, vm), "was", was, "now", g.Images[vm], "last", prev.Number)
			}
		}
		if serr := e.gens.Save(g); serr != nil {
			log.Error("record generation", "err", serr)
		}
		log.Info("deployed", "seconds", g.Finished.Sub(g.Started).Seconds())
		e.hook(g)
		return
	}
	g.Error = err.Error()
	prev := generation.LastGood(gens)
	if prev != nil && prev.Number != g.Number {
		log.Error("unhealthy; rolling back", "err", err, "to", prev.Number)
		pcfg, perr := e.parse(prev)
		if perr == nil {
			_, perr = e.d.Apply(label(prev), pcfg)
		}
		g.Status, g.RolledBackTo = generation.RolledBack, prev.Number
		e.count(func(c *Counters) { c.Rollbacks++ })
		if perr != nil {
			g.Error += "; the rollback failed too: " + perr.Error()
		}
		g.VMsTotal, g.VMsActive = e.counts(pcfg)
	} else {
		log.Error("failed, with no earlier generation to go back to", "err", err)
		g.Status = generation.Failed
		g.VMsTotal, g.VMsActive = e.counts(cfg)
	}
	if serr := e.gens.Save(g); serr != nil {
		log.Error("record generation", "err", serr)
	}
	e.hook(g)
}

// Rollback applies generation n (default: the newest succeeded one before
// the running one) by hand, recording it as a new generation.
func (e *Engine) Rollback(ctx context.Context, n int) (*generation.Generation, error) {
	e.deploying.Lock()
	defer e.deploying.Unlock()
	gens, err := e.gens.List()
	if err != nil {
		return nil, err
	}
	var target *generation.Generation
	if n > 0 {
		if target, err = e.gens.Get(n); err != nil {
			return nil, err
		}
	} else {
		cur := generation.LastGood(gens)
		for i := len(gens) - 1; i >= 0 && target == nil; i-- {
			if gens[i].Status == generation.Succeeded && (cur == nil || gens[i].Number != cur.Number) {
				target = gens[i]
			}
		}
		if target == nil {
			return nil, errors.New("no earlier good generation to roll back to")
		}
	}
	g := &generation.Generation{Number: generation.Next(gens), Commit: target.Commit, Ref: target.Ref, Signer: target.Signer,
		Path: target.Path, Config: target.Config, Images: target.Images, Started: time.Now().UTC(), Status: generation.Applying, Manual: true}
	if err := e.gens.Save(g); err != nil {
		return nil, err
	}
	e.log.Info("rolling back by hand", "to", target.Number, "generation", g.Number)
	e.finish(ctx, g, gens)
	if g.Status != generation.Succeeded {
		return g, errors.New(g.Error)
	}
	return g, nil
}

// moved are the VMs of cfg whose image, written as in prev's file, ran
// another digest than prev recorded: vm → prev's digest.
func (e *Engine) moved(prev *generation.Generation, cfg *config.Config, images map[string]string) map[string]string {
	pcfg, err := e.d.Parse(prev.Path, []byte(prev.Config))
	if err != nil {
		return nil
	}
	out := map[string]string{}
	for vm, now := range images {
		was := prev.Images[vm]
		if p := pcfg.VM(vm); p != nil && was != "" && was != now && p.Image == cfgImage(cfg, vm) {
			out[vm] = was
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// cfgImage is the image cfg names for vm.
func cfgImage(cfg *config.Config, vm string) string {
	if v := cfg.VM(vm); v != nil {
		return v.Image
	}
	return ""
}

// booted are the image digests cfg's VMs run, for the generation's record.
func (e *Engine) booted(log *slog.Logger, cfg *config.Config) map[string]string {
	recs, err := e.d.RunRecords()
	if err != nil {
		log.Error("image digests not recorded", "err", err)
		return nil
	}
	return bootedImages(cfg, recs)
}

// parse is generation g's file for this host, its VMs pinned to the image
// digests g recorded (a generation rolled back to, or applied again after
// a restart, boots what it ran, not what its tags name now).
func (e *Engine) parse(g *generation.Generation) (*config.Config, error) {
	cfg, err := e.d.Parse(g.Path, []byte(g.Config))
	if err != nil {
		return nil, err
	}
	if len(g.Images) == 0 {
		return cfg.ForHost(e.o.HostName), nil
	}
	recs, err := e.d.RunRecords()
	if err != nil {
		e.log.Warn("run records unread: every recorded image digest is pinned", "err", err)
	}
	pins := pinImages(cfg.ForHost(e.o.HostName), g.Images, recs)
	if len(pins) == 0 {
		return cfg.ForHost(e.o.HostName), nil
	}
	src, err := config.WithImages(cfg.Source, pins)
	if err == nil {
		cfg, err = e.d.Parse(g.Path, src)
	}
	if err != nil {
		return nil, fmt.Errorf("pinning the image digests of generation %d: %w", g.Number, err)
	}
	e.log.Info("image digests pinned to the generation's", "generation", g.Number, "vms", strings.Join(slices.Sorted(maps.Keys(pins)), ","))
	return cfg.ForHost(e.o.HostName), nil
}

// healthy waits for every VM the apply started to be running and to pass
// its health check, within the health timeout.
func (e *Engine) healthy(ctx context.Context, cfg *config.Config, res *daemon.ApplyResult) error {
	deadline := time.Now().Add(e.o.HealthTimeout)
	for _, a := range res.VMs {
		if !a.Started() {
			continue
		}
		vm := cfg.VM(a.Name)
		if vm == nil {
			continue
		}
		for {
			err := e.check(vm)
			if err == nil {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("%s is not healthy after %s: %w", vm.Name, e.o.HealthTimeout, err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
	return nil
}

// check is one health check of vm: running, and its check passing.
func (e *Engine) check(vm *config.VM) error {
	st, ok := e.d.Supervisor().Status(vm.Name)
	if !ok || st.State != supervisor.Running {
		state := "unknown"
		if ok {
			state = string(st.State)
		}
		return fmt.Errorf("state %s", state)
	}
	return health.Check(e.o.NetNS, vm)
}

// counts is how many of cfg's VMs there are and how many run.
func (e *Engine) counts(cfg *config.Config) (total, active int) {
	for _, st := range e.d.Supervisor().List() {
		if st.State == supervisor.Running {
			active++
		}
	}
	if cfg != nil {
		total = len(cfg.VMs)
	} else {
		total = len(e.d.Supervisor().List())
	}
	return total, active
}

// hook runs the post-deploy hook in the background with the deploy's facts
// in its environment; its failure is logged and never blocks a deploy.
func (e *Engine) hook(g *generation.Generation) {
	if e.o.Hook == "" {
		return
	}
	env := append(os.Environ(),
		"MICROVM_GIT_SHA="+g.Commit.Hash,
		"MICROVM_GIT_REF="+g.Ref,
		"MICROVM_GIT_MSG="+g.Commit.Message,
		"MICROVM_GENERATION="+strconv.Itoa(g.Number),
		"MICROVM_STATUS="+hookStatus(g.Status),
		"MICROVM_ERROR="+g.Error,
		"MICROVM_VMS_ACTIVE="+strconv.Itoa(g.VMsActive),
		"MICROVM_VMS_TOTAL="+strconv.Itoa(g.VMsTotal),
	)
	e.hooks.Add(1)
	go func() {
		defer e.hooks.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "sh", "-c", e.o.Hook)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			e.log.Error("post-deploy hook failed", "generation", g.Number, "err", err, "output", strings.TrimSpace(string(out)))
			return
		}
		e.log.Info("post-deploy hook ran", "generation", g.Number)
	}()
}

// WaitHooks waits for running hooks (tests and shutdown).
func (e *Engine) WaitHooks() { e.hooks.Wait() }

func hookStatus(s generation.Status) string {
	if s == generation.Applying {
		return "failed"
	}
	return string(s)
}

// Status is what `microvm deploy status` shows.
type Status = apitypes.DeployStatus

// Status reports the loop's state. Current is the generation the fleet
// runs: the last good one (a rolled-back attempt put it back).
func (e *Engine) Status() (Status, error) {
	gens, err := e.gens.List()
	if err != nil {
		return Status{}, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	st := Status{Branch: e.o.Branch, Path: e.o.Path, LastGood: generation.LastGood(gens), Last: generation.Latest(gens),
		RemoteHead: e.lastHead, LastFetch: e.lastFetch, FetchErr: e.fetchErr, NextPoll: e.nextPoll, Suspended: e.suspended}
	st.Current = st.LastGood
	for _, g := range []*generation.Generation{st.Current, st.LastGood, st.Last} {
		if g != nil {
			g.Config = "" // not needed for status; history has it
		}
	}
	return st, nil
}

// History lists the retained generations, newest first.
func (e *Engine) History() ([]*generation.Generation, error) {
	gens, err := e.gens.List()
	if err != nil {
		return nil, err
	}
	out := make([]*generation.Generation, 0, len(gens))
	for i := len(gens) - 1; i >= 0; i-- {
		out = append(out, gens[i])
	}
	return out, nil
}

func label(g *generation.Generation) string {
	return fmt.Sprintf("%s@%s (generation %d)", g.Path, short(g.Commit.Hash), g.Number)
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
