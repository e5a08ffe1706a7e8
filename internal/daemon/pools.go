package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/state"
)

// PoolsDir is where the members of each template's pool are recorded:
// STATE/pools/TEMPLATE/NAME, one empty file per clone kept ready. A clone
// taken (microvm take) is no longer recorded there, and is the taker's.
func PoolsDir(stateDir string) string { return filepath.Join(stateDir, "pools") }

// ErrNoPool says a template keeps no pool of clones.
var ErrNoPool = errors.New("no pool")

// poolKeeper wakes the loop that keeps every template's pool full.
type poolKeeper struct {
	poke chan struct{}
}

// pokePools has the pools' loop look again (after an apply, a take).
func (d *Daemon) pokePools() {
	select {
	case d.pools.poke <- struct{}{}:
	default:
	}
}

// keepPools keeps each template's pool at its pool: clones started to
// fill it, the ones over it removed; it looks after every poke, and every
// 30 s for members that failed or were removed.
func (d *Daemon) keepPools() {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-d.pools.poke:
		case <-t.C:
		}
		d.fillPools()
	}
}

// fillPools does one pass of keepPools.
func (d *Daemon) fillPools() {
	cfg := d.applied()
	if cfg == nil {
		return
	}
	dirs, _ := os.ReadDir(PoolsDir(d.env.StateDir))
	for _, e := range dirs {
		if vm := cfg.VM(e.Name()); vm == nil || !vm.Template {
			d.trimPool(e.Name(), 0) // no template of that name any more
		}
	}
	for _, vm := range cfg.VMs {
		if !vm.Template {
			continue
		}
		d.dropStaleMembers(vm)
		members := d.trimPool(vm.Name, vm.Supervision.Pool)
		var names []string
		for range vm.Supervision.Pool - len(members) {
			name, err := d.newPoolMember(cfg, vm.Name)
			if err != nil {
				d.log.Warn("cannot fill the pool", "template", vm.Name, "err", err)
				break
			}
			names = append(names, name)
		}
		if len(names) > 0 {
			go d.startPoolMembers(vm.Name, names)
		}
	}
}

// dropStaleMembers removes the clones of template's pool that started
// from another state than its current one, or from its spec before a
// change: take hands out clones of the template as it is.
func (d *Daemon) dropStaleMembers(template *config.VM) {
	_, saved, err := launch.TemplateState(d.env, template)
	changed := errors.Is(err, launch.ErrTemplateChanged)
	if err != nil && !changed {
		return // none made yet, or damaged: the next clone makes it
	}
	for _, name := range d.poolMembers(template.Name) {
		st, ok := d.Status(name)
		if d.starting(name) || !ok || st.Boot == "" {
			continue
		}
		if !changed && strings.Contains(st.Boot, saved.SavedAt.Format(time.RFC3339)) {
			continue
		}
		d.dropPoolMember(template.Name, name)
	}
}

// dropPoolMember removes the clone name of template's pool, then its
// record (a record whose VM is gone is forgotten at the next pass).
func (d *Daemon) dropPoolMember(template, name string) {
	if err := d.Remove(name, true); err != nil {
		d.log.Warn("cannot remove the pool's clone", "template", template, "vm", name, "err", err)
		return
	}
	os.Remove(filepath.Join(PoolsDir(d.env.StateDir), template, name))
}

// poolMembers are the clones recorded in template's pool.
func (d *Daemon) poolMembers(template string) []string {
	entries, _ := os.ReadDir(filepath.Join(PoolsDir(d.env.StateDir), template))
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// trimPool forgets the members of template's pool that are gone (removed,
// or their put failed), removes those that failed (a new one takes the
// place) and those over keep; it returns the ones kept.
func (d *Daemon) trimPool(template string, keep int) []string {
	dir := filepath.Join(PoolsDir(d.env.StateDir), template)
	var kept []string
	for _, name := range d.poolMembers(template) {
		st, _ := d.Status(name)
		switch {
		case d.starting(name):
			kept = append(kept, name) // its put decides; over the size, removed at the next pass
		case !d.IsPut(name):
			os.Remove(filepath.Join(dir, name))
		case len(kept) >= keep || st.State == apitypes.Failed:
			d.dropPoolMember(template, name)
		default:
			kept = append(kept, name)
		}
	}
	if keep == 0 {
		os.Remove(dir)
	}
	return kept
}

// starting says a pool member's put is still under way (recorded, not put
// yet).
func (d *Daemon) starting(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.poolStarting[name]
}

// newPoolMember records a new member of template's pool under a name no
// VM has: the template's name (cut to 8 bytes), a dash and a number.
func (d *Daemon) newPoolMember(cfg *config.Config, template string) (string, error) {
	prefix := template[:min(len(template), config.MaxNameLen-4)]
	dir := filepath.Join(PoolsDir(d.env.StateDir), template)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	for k := 1; k < 1000; k++ {
		name := fmt.Sprintf("%s-%d", prefix, k)
		if cfg.VM(name) != nil || d.IsPut(name) {
			continue
		}
		d.mu.Lock()
		taken := d.poolStarting[name]
		if !taken {
			d.poolStarting[name] = true
		}
		d.mu.Unlock()
		if taken {
			continue
		}
		if err := state.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			return "", err
		}
		return name, nil
	}
	return "", errors.New("no free name")
}

// startPoolMembers puts the clones names of template, together (Clone).
func (d *Daemon) startPoolMembers(template string, names []string) {
	defer func() {
		d.mu.Lock()
		for _, name := range names {
			delete(d.poolStarting, name)
		}
		d.mu.Unlock()
	}()
	if _, err := d.Clone(template, names); err != nil {
		d.log.Warn("cannot start the pool's clones", "template", template, "vms", names, "err", err)
	}
}

// freeIndexes are the n lowest indexes no VM of the applied file or the
// API has (fewer when they run out).
func (d *Daemon) freeIndexes(n int) []int {
	used := map[int]bool{}
	if cfg := d.applied(); cfg != nil {
		for _, vm := range cfg.VMs {
			used[vm.Index] = true
		}
	}
	var out []int
	for i := 1; i <= 255 && len(out) < n; i++ {
		if !used[i] {
			out = append(out, i)
		}
	}
	return out
}

// Take hands out a ready clone of template's pool: it is the caller's
// from now on (removed with rm) and the pool starts another. With none
// ready, it waits up to timeout for one.
func (d *Daemon) Take(template string, timeout time.Duration) (apitypes.VMStatus, error) {
	vm := d.VMConfig(template)
	switch {
	case vm == nil:
		return apitypes.VMStatus{}, fmt.Errorf("%s is not in the applied file", template)
	case !vm.Template:
		return apitypes.VMStatus{}, fmt.Errorf("%s is not a template", template)
	case vm.Supervision.Pool == 0:
		return apitypes.VMStatus{}, fmt.Errorf("%w: %s keeps no clones ready (set vms.%s.pool, or microvm clone %s NAME)", ErrNoPool, template, template, template)
	}
	dir := filepath.Join(PoolsDir(d.env.StateDir), template)
	for deadline := time.Now().Add(timeout); ; time.Sleep(50 * time.Millisecond) {
		for _, name := range d.poolMembers(template) {
			st, ok := d.Status(name)
			if !ok || st.State != apitypes.Running {
				continue
			}
			// Whoever removes the record first has the clone.
			if os.Remove(filepath.Join(dir, name)) == nil {
				d.pokePools()
				st, _ = d.Status(name)
				return st, nil
			}
		}
		if time.Now().After(deadline) {
			return apitypes.VMStatus{}, fmt.Errorf("no clone of %s's pool was ready within %s", template, timeout)
		}
	}
}
