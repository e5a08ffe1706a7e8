package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"microvm.dev/microvm/internal/backup"
	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/secrets"
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
// guest had written. With snapshots.backup, each snapshot is then sent to
// the restic repository (from the snapshot copy, the guest already
// resumed); a failed send is recorded on the snapshot, which is kept. Old
// snapshots beyond the VM's snapshots.keep are pruned, and old backups
// beyond backup.keep.
func (d *Daemon) Snapshot(vm, vol string) ([]snapshot.Snapshot, error) {
	spec := d.VMConfig(vm)
	if spec == nil {
		return nil, fmt.Errorf("%s: %w", vm, ErrUnknownVM)
	}
	var names []string
	for _, v := range spec.Volumes {
		if vol == "" || v.Name == vol {
			names = append(names, v.Name)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%s has no volume %q: %w", vm, vol, ErrNoVolume)
	}
	out, err := d.take(spec, names)
	if err != nil {
		return out, err
	}
	vmDir := state.Dir{Root: d.env.StateDir}.VMDir(vm)
	if b := spec.Supervision.Snapshots.Backup; b != nil {
		d.sendBackups(spec, b, out)
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

// take copies the volumes names of spec's VM, the guest synced and
// paused while it does when it runs.
func (d *Daemon) take(spec *config.VM, names []string) ([]snapshot.Snapshot, error) {
	vm := spec.Name
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
	vmDir := state.Dir{Root: d.env.StateDir}.VMDir(vm)
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
	return out, nil
}

// sendBackups sends each of snaps to the VM's restic repository and
// prunes its backups to b.Keep; the outcome is recorded on each snapshot.
func (d *Daemon) sendBackups(spec *config.VM, b *config.Backup, snaps []snapshot.Snapshot) {
	ctx := context.Background()
	repo, err := d.repo(spec.Name, b)
	dir := snapshot.Dir(state.Dir{Root: d.env.StateDir}.VMDir(spec.Name))
	for i := range snaps {
		s := &snaps[i]
		if err != nil {
			s.BackupError = err.Error()
			continue
		}
		sent, serr := repo.Send(ctx, spec.Name, *s, filepath.Join(dir, s.Name+".img"))
		if serr != nil {
			s.BackupError = serr.Error()
			d.log.Error("backup", "vm", spec.Name, "snapshot", s.Name, "repository", b.Repository, "err", serr)
			continue
		}
		s.Backup = sent.ID
		d.log.Info("backup", "vm", spec.Name, "snapshot", s.Name, "repository", b.Repository, "id", sent.ID)
		if perr := repo.Prune(ctx, spec.Name, s.Volume, b.Keep); perr != nil {
			d.log.Error("prune backups", "vm", spec.Name, "err", perr)
		}
	}
}

// repo is vm's restic repository, its password and environment
// decrypted with the host's identities.
func (d *Daemon) repo(vm string, b *config.Backup) (backup.Repo, error) {
	pw, err := secrets.Decrypt(b.Password, d.env.Identities)
	if err != nil {
		return backup.Repo{}, fmt.Errorf("vms.%s.snapshots.backup.password: %w", vm, err)
	}
	env := map[string]string{}
	for k, v := range b.Env {
		plain, err := secrets.Decrypt(v, d.env.Identities)
		if err != nil {
			return backup.Repo{}, fmt.Errorf("vms.%s.snapshots.backup.env.%s: %w", vm, k, err)
		}
		env[k] = strings.TrimRight(string(plain), "\r\n")
	}
	host, _ := os.Hostname()
	return backup.Repo{Repository: b.Repository, Password: strings.TrimRight(string(pw), "\r\n"), Env: env,
		CacheDir: filepath.Join(d.env.StateDir, "cache", "restic"), Host: host}, nil
}

// Snapshots lists vm's snapshots, oldest first.
func (d *Daemon) Snapshots(vm string) ([]snapshot.Snapshot, error) {
	return snapshot.List(snapshot.Dir(state.Dir{Root: d.env.StateDir}.VMDir(vm)))
}

// Backups lists vm's backups in its restic repository, oldest first:
// those sent from any host.
func (d *Daemon) Backups(vm string) ([]backup.Backup, error) {
	spec := d.VMConfig(vm)
	if spec == nil {
		return nil, fmt.Errorf("%s: %w", vm, ErrUnknownVM)
	}
	b := spec.Supervision.Snapshots.Backup
	if b == nil {
		return nil, fmt.Errorf("%s: %w", vm, ErrNoBackup)
	}
	repo, err := d.repo(vm, b)
	if err != nil {
		return nil, err
	}
	return repo.List(context.Background(), vm)
}

// ErrNoBackup says the VM has no snapshots.backup.
var ErrNoBackup = errors.New("the VM has no snapshots.backup in the file")

// Restore copies snapshot name back over its volume; vm must be stopped.
// fromBackup fetches the snapshot from the VM's restic repository first
// (on any host whose file has the VM: one that never ran it too). The
// volume as it was is kept as a snapshot first (and returned; none when
// the volume did not exist yet).
func (d *Daemon) Restore(vm, name string, fromBackup bool) (snapshot.Snapshot, error) {
	spec := d.VMConfig(vm)
	if spec == nil {
		return snapshot.Snapshot{}, fmt.Errorf("%s: %w", vm, ErrUnknownVM)
	}
	if st, ok := d.sup.Status(vm); ok && st.State != supervisor.Stopped && st.State != supervisor.Failed && st.State != supervisor.Saved {
		return snapshot.Snapshot{}, fmt.Errorf("%s is %s: %w", vm, st.State, ErrRunning)
	}
	vmDir := state.Dir{Root: d.env.StateDir}.VMDir(vm)
	vol, _, _ := strings.Cut(name, "@")
	if !slices.ContainsFunc(spec.Volumes, func(v config.Volume) bool { return v.Name == vol }) {
		return snapshot.Snapshot{}, fmt.Errorf("%s has no volume %q: %w", vm, vol, ErrNoVolume)
	}
	if fromBackup {
		if err := d.fetchBackup(spec, name, snapshot.Dir(vmDir)); err != nil {
			return snapshot.Snapshot{}, err
		}
	}
	return snapshot.Restore(snapshot.Dir(vmDir), name, volume.Path(vmDir, vol), time.Now())
}

// fetchBackup brings snapshot name of spec's VM from its repository into
// the snapshots directory dir (replacing a local copy of that name).
func (d *Daemon) fetchBackup(spec *config.VM, name, dir string) error {
	b := spec.Supervision.Snapshots.Backup
	if b == nil {
		return fmt.Errorf("%s: %w", spec.Name, ErrNoBackup)
	}
	repo, err := d.repo(spec.Name, b)
	if err != nil {
		return err
	}
	ctx := context.Background()
	found, err := repo.Find(ctx, spec.Name, name)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp := filepath.Join(dir, ".fetch-"+name+".img")
	if err := repo.Fetch(ctx, found, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name+".img")); err != nil {
		os.Remove(tmp)
		return err
	}
	d.log.Info("backup fetched", "vm", spec.Name, "snapshot", name, "id", found.ID, "repository", b.Repository)
	return nil
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
