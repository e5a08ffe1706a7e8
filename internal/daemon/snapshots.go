package daemon

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"microvm.dev/microvm/internal/snapshot"
	"microvm.dev/microvm/internal/state"
	"microvm.dev/microvm/internal/supervisor"
	"microvm.dev/microvm/internal/vmssh"
	"microvm.dev/microvm/internal/volume"
)

// ErrRunning says an operation needs the VM stopped.
var ErrRunning = errors.New("the VM is running; stop it first (microvm stop)")

// ErrUnknownVM says the VM is not in the applied file.
var ErrUnknownVM = errors.New("no such VM in the applied file")

// ErrNoVolume says the VM has no volume of the name asked for.
var ErrNoVolume = errors.New("no such volume")

// Snapshot snapshots one volume of vm (all of them when vol is ""). A
// running guest is asked to sync, then paused for the copy and resumed, so
// the snapshot is at least crash-consistent and holds everything the
// guest had written. Old snapshots beyond the VM's snapshots.keep are
// pruned.
func (d *Daemon) Snapshot(vm, vol string) ([]snapshot.Snapshot, error) {
	spec := d.VMConfig(vm)
	if spec == nil {
		return nil, fmt.Errorf("%s: %w", vm, ErrUnknownVM)
	}
	vmDir := state.Dir{Root: d.env.StateDir}.VMDir(vm)
	var names []string
	for _, v := range spec.Volumes {
		if vol == "" || v.Name == vol {
			names = append(names, v.Name)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%s has no volume %q: %w", vm, vol, ErrNoVolume)
	}
	if r, ok := d.sup.Process(vm); ok {
		// Best effort: flush the guest's page cache to its disks.
		vmssh.Run(d.env.StateDir, vm, spec.Net.Address.String(), d.env.NetNS, "sync", 30*time.Second)
		if err := r.Pause(); err != nil {
			return nil, fmt.Errorf("pause %s for the snapshot: %w", vm, err)
		}
		defer func() {
			if err := r.Resume(); err != nil {
				d.log.Error("resume after a snapshot", "vm", vm, "err", err)
			}
		}()
	}
	now := time.Now()
	var out []snapshot.Snapshot
	for _, n := range names {
		s, err := snapshot.Take(snapshot.Dir(vmDir), n, volume.Path(vmDir, n), now)
		if err != nil {
			return out, err
		}
		out = append(out, s)
		d.log.Info("volume snapshot", "vm", vm, "snapshot", s.Name, "method", s.Method)
	}
	if keep := spec.Supervision.Snapshots.Keep; keep > 0 {
		if removed, err := snapshot.Prune(snapshot.Dir(vmDir), keep); err != nil {
			d.log.Error("prune snapshots", "vm", vm, "err", err)
		} else if len(removed) > 0 {
			d.log.Info("snapshots pruned", "vm", vm, "removed", removed)
		}
	}
	return out, nil
}

// Snapshots lists vm's snapshots, oldest first.
func (d *Daemon) Snapshots(vm string) ([]snapshot.Snapshot, error) {
	return snapshot.List(snapshot.Dir(state.Dir{Root: d.env.StateDir}.VMDir(vm)))
}

// Restore copies snapshot name back over its volume; vm must be stopped.
// The volume as it was is kept as a snapshot first (and returned).
func (d *Daemon) Restore(vm, name string) (snapshot.Snapshot, error) {
	spec := d.VMConfig(vm)
	if spec == nil {
		return snapshot.Snapshot{}, fmt.Errorf("%s: %w", vm, ErrUnknownVM)
	}
	if st, ok := d.sup.Status(vm); ok && st.State != supervisor.Stopped && st.State != supervisor.Failed && st.State != supervisor.Saved {
		return snapshot.Snapshot{}, fmt.Errorf("%s is %s: %w", vm, st.State, ErrRunning)
	}
	vmDir := state.Dir{Root: d.env.StateDir}.VMDir(vm)
	vol, _, _ := strings.Cut(name, "@")
	return snapshot.Restore(snapshot.Dir(vmDir), name, volume.Path(vmDir, vol), time.Now())
}

// snapshotDue takes the periodic snapshots the file asks for.
func (d *Daemon) snapshotDue() {
	cfg := d.applied()
	if cfg == nil {
		return
	}
	for _, vm := range cfg.VMs {
		every := time.Duration(vm.Supervision.Snapshots.Every)
		if every <= 0 || len(vm.Volumes) == 0 {
			continue
		}
		list, err := d.Snapshots(vm.Name)
		if err != nil {
			continue
		}
		if len(list) > 0 && time.Since(list[len(list)-1].Time) < every {
			continue
		}
		if _, err := d.Snapshot(vm.Name, ""); err != nil {
			d.log.Error("periodic snapshot", "vm", vm.Name, "err", err)
		}
	}
}
