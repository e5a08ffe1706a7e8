package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"

	"microvm.dev/microvm/internal/apitypes"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/plan"
	"microvm.dev/microvm/internal/state"
)

// noFile is what the VMs put through the API are composed with before a
// file was applied: no VMs, the host's defaults.
var noFile = []byte("vms: {}\n")

// ErrFileVM says a VM is the applied file's: it changes with the file.
var ErrFileVM = errors.New("the VM is in the applied file")

// PutResult is what putting one VM did.
type PutResult = apitypes.PutResult

// Put makes the VM name match entry (its entry as a file would hold it:
// YAML or JSON), on its own: it is checked with the applied file's
// defaults and against every other VM (an entry with problems changes
// nothing and returns them with ErrInvalid), recorded in the state
// directory (a restarted daemon has it again; a file's apply leaves it
// alone), and the plan's action for it done: created, restarted with the
// new spec, started, or left alone. It returns once the VM's hypervisor
// runs; readiness and failure come in its status (and the event stream).
// Changes to one VM are done in the order they come; changes to different
// VMs do not wait for each other's boots.
func (d *Daemon) Put(name string, entry []byte) (*PutResult, error) {
	file := "PUT /v1/vms/" + name
	res := &PutResult{File: file, VM: VMAction{Name: name}}
	data, err := config.ParseEntry(entry)
	if err != nil {
		res.Problems = config.Problems{{File: file, Path: "vms." + name, Message: err.Error()}}
		return res, ErrInvalid
	}
	out, err := d.putAll(file, map[string][]byte{name: data})
	if errors.Is(err, ErrFileVM) {
		return nil, err
	}
	res.Problems, res.Network, res.Warnings = out.Problems, out.Network, out.Warnings
	if len(out.VMs) == 1 {
		res.VM = out.VMs[0]
	}
	if err != nil && len(out.VMs) == 0 && len(out.Problems) == 0 {
		return nil, err // nothing was done
	}
	return res, err
}

// putAll puts the VMs of entries (parsed entries, by name) as Put does
// one: checked together with the applied file and the other VMs (any
// problem changes nothing), recorded, torn down where they change, the
// network reconciled once for all of them, then started at once (as many
// booting together as the host's boots allow). It returns once their
// hypervisors run.
func (d *Daemon) putAll(file string, entries map[string][]byte) (*CloneResult, error) {
	names := slices.Sorted(maps.Keys(entries))
	for _, name := range names { // in order: two puts never wait for each other's
		lock := d.vmLocks.lock(name)
		defer lock.Unlock()
	}
	res := &CloneResult{File: file, VMs: []VMAction{}}
	d.desired.Lock()
	d.mu.Lock()
	fileName, fileData, api := d.file, d.fileData, maps.Clone(d.api)
	var inFile []string
	for _, name := range names {
		if d.cfg != nil && d.cfg.VM(name) != nil && d.api[name] == nil {
			inFile = append(inFile, name)
		}
	}
	d.mu.Unlock()
	if len(inFile) > 0 {
		d.desired.Unlock()
		return res, fmt.Errorf("%w %s: change %s there", ErrFileVM, fileName, strings.Join(inFile, ", "))
	}
	if fileData == nil {
		fileData = noFile
	}
	maps.Copy(api, entries)
	vms, ps, err := d.decide(fileName, fileData, api, file,
		func(cfg *config.Config) []plan.VMPlan {
			var out []plan.VMPlan
			for _, name := range names {
				out = append(out, d.planOf(cfg, name))
			}
			return out
		},
		func() error {
			for _, name := range names {
				if err := (state.Dir{Root: d.env.StateDir}).WriteAPIVM(name, entries[name]); err != nil {
					return err
				}
			}
			return nil
		})
	d.desired.Unlock()
	if len(ps) > 0 {
		res.Problems = ps
		return res, ErrInvalid
	}
	if err != nil {
		return res, err
	}
	changes := make([]*change, len(vms))
	var toStart []*change
	changed := false
	for i, v := range vms {
		changes[i] = d.newChange(v)
		if d.teardown(changes[i]) {
			toStart = append(toStart, changes[i])
		}
		changed = changed || v.Action != plan.Unchanged
	}
	defer func() {
		for _, c := range changes {
			res.VMs = append(res.VMs, *c.a)
		}
	}()
	for _, c := range changes {
		if c.a.Error != "" {
			return res, fmt.Errorf("%s: %s", c.plan.Name, c.a.Error)
		}
	}
	if changed {
		// An unchanged VM's network is the one reconciled already: a
		// provider putting every pod's VM again does no host work.
		var apply ApplyResult
		res.Network, err = d.reconcile(&apply)
		res.Warnings = apply.Warnings
		if res.Network != nil {
			networkDone(changes, res.Network.Links)
		}
		if err != nil {
			return res, err
		}
	}
	errs := make([]error, len(toStart))
	var wg sync.WaitGroup
	for i, c := range toStart {
		wg.Go(func() {
			d.boots <- struct{}{}
			err := d.sup.Launch(context.Background(), c.plan.Desired)
			<-d.boots
			d.started(c, err)
			errs[i] = err
		})
	}
	wg.Wait()
	for _, c := range changes {
		d.log.Info("VM put", "vm", c.plan.Name, "action", c.a.Action)
	}
	return res, errors.Join(errs...)
}

// CloneResult is what putting clones did.
type CloneResult = apitypes.CloneResult

// Clone puts a clone of template under each name (microvm clone), each
// with the lowest index free, all at once (putAll): checked together,
// the network reconciled once, their hypervisors started together. A
// name a VM has already is refused.
func (d *Daemon) Clone(template string, names []string) (*CloneResult, error) {
	d.cloneMu.Lock()
	defer d.cloneMu.Unlock()
	file := "POST /v1/vms/" + template + "/clone"
	if vm := d.VMConfig(template); vm == nil || !vm.Template {
		return &CloneResult{File: file}, fmt.Errorf("%s is not a template of the applied file", template)
	}
	entries := map[string][]byte{}
	free := d.freeIndexes(len(names))
	if len(free) < len(names) {
		return &CloneResult{File: file}, fmt.Errorf("only %d free indexes (1-255) for %d clones", len(free), len(names))
	}
	for i, name := range names {
		if _, ok := d.Status(name); ok || entries[name] != nil {
			return &CloneResult{File: file}, fmt.Errorf("%s: a VM of that name exists", name)
		}
		entries[name], _ = json.Marshal(map[string]any{"from": template, "index": free[i]})
	}
	return d.putAll(file, entries)
}

// planOf is the plan of the VM name in cfg, against what the supervisor
// knows of it.
func (d *Daemon) planOf(cfg *config.Config, name string) plan.VMPlan {
	var observed []plan.Observed
	for _, o := range d.observed() {
		if o.Name == name {
			observed = append(observed, o)
		}
	}
	for _, v := range plan.Compute(cfg, observed, d.planHost(cfg)).VMs {
		if v.Name == name {
			return v
		}
	}
	return plan.VMPlan{Name: name, Action: plan.Unchanged}
}

// IsPut says whether name is a VM put through the API.
func (d *Daemon) IsPut(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.api[name] != nil
}

// Remove forgets a VM (stopping it; a boot still preparing gives up at
// once) and, with purge, deletes its directory with its volumes. A VM put
// through the API is taken out of what the host is held to; one still in
// the applied file is refused.
func (d *Daemon) Remove(name string, purge bool) error {
	put := d.IsPut(name)
	if !put && d.VMConfig(name) != nil {
		return fmt.Errorf("%s is in the applied file; remove it from the file and apply", name)
	}
	if put {
		d.sup.Stop(name) // cancels a Put's launch still preparing, which holds the VM's lock
		lock := d.vmLocks.lock(name)
		defer lock.Unlock()
		if err := d.unput(name); err != nil {
			return err
		}
	}
	if err := d.forget(name); err != nil {
		return err
	}
	if put {
		if _, err := d.reconcile(&ApplyResult{}); err != nil {
			return err
		}
	}
	if purge {
		return os.RemoveAll(state.Dir{Root: d.env.StateDir}.VMDir(name))
	}
	return nil
}

// unput takes the VM name out of the VMs put through the API.
func (d *Daemon) unput(name string) error {
	d.desired.Lock()
	defer d.desired.Unlock()
	d.mu.Lock()
	api := maps.Clone(d.api)
	fileName, fileData := d.file, d.fileData
	d.mu.Unlock()
	if api[name] == nil {
		return nil // removed meanwhile
	}
	delete(api, name)
	if fileData == nil {
		fileData = noFile
	}
	_, ps, err := d.decide(fileName, fileData, api, fileName, func(*config.Config) []plan.VMPlan { return nil },
		func() error { return state.Dir{Root: d.env.StateDir}.RemoveAPIVM(name) })
	if len(ps) > 0 {
		// Fewer VMs than a valid whole: only a host that changed under the
		// file (an interface gone) fails here.
		return fmt.Errorf("remove %s: %w", name, ps)
	}
	return err
}

// keyedMutex is a mutex per key, made on first use and dropped when its
// last holder unlocks.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyedLock
}

type keyedLock struct {
	sync.Mutex
	k       *keyedMutex
	key     string
	waiters int
}

// lock locks key's mutex; Unlock the returned lock.
func (k *keyedMutex) lock(key string) *keyedLock {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyedLock{}
	}
	l := k.locks[key]
	if l == nil {
		l = &keyedLock{k: k, key: key}
		k.locks[key] = l
	}
	l.waiters++
	k.mu.Unlock()
	l.Mutex.Lock()
	return l
}

// Unlock unlocks the key's mutex.
func (l *keyedLock) Unlock() {
	l.k.mu.Lock()
	l.waiters--
	if l.waiters == 0 {
		delete(l.k.locks, l.key)
	}
	l.k.mu.Unlock()
	l.Mutex.Unlock()
}
