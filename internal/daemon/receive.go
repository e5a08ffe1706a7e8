package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/savestate"
	"microvm.dev/microvm/internal/state"
	"microvm.dev/microvm/internal/supervisor"
	"microvm.dev/microvm/internal/transfer"
	"microvm.dev/microvm/internal/vmssh"
)

// movedFileRE is a file a move may bring: a volume's image, the VM's SSH
// host key, and a saved state's files (savestate.InstallMoved).
var movedFileRE = regexp.MustCompile(`^([a-z0-9][a-z0-9_-]{0,19}\.img|ssh_host_ed25519_key|saved\.state|saved\.json|pin\.[a-z0-9][a-zA-Z0-9._-]{0,200})$`)

// ErrHere says the receiving host has the VM already.
var ErrHere = errors.New("this host has a VM of that name already")

// PeerHello says who this host is, the room its state directory has, and
// its SSH key.
func (d *Daemon) PeerHello() apitypes.PeerHello {
	var fs syscall.Statfs_t
	h := apitypes.PeerHello{Host: d.HostName()}
	if syscall.Statfs(d.env.StateDir, &fs) == nil {
		h.FreeBytes = int64(fs.Bavail) * fs.Bsize
	}
	if key, err := vmssh.ClientPublicKey(d.env.StateDir); err == nil {
		h.SSHKey = key
	} else {
		d.log.Error("move: this host's SSH key", "err", err)
	}
	return h
}

// incoming is where the files of vm arrive before the move commits.
func (d *Daemon) incoming(vm string) string {
	return filepath.Join(state.Dir{Root: d.env.StateDir}.IncomingDir(), vm)
}

// mayReceive says whether vm may move here: it is not running or held
// here, unless this host's file names it and it was moved away (it comes
// back).
func (d *Daemon) mayReceive(vm string) error {
	moved, err := state.Dir{Root: d.env.StateDir}.MovedVMs()
	if err != nil {
		return err
	}
	if _, back := moved[vm]; back {
		return nil
	}
	if _, known := d.sup.Status(vm); known || d.VMConfig(vm) != nil {
		return fmt.Errorf("%s: %w", vm, ErrHere)
	}
	if _, err := os.Stat(state.Dir{Root: d.env.StateDir}.VMDir(vm)); err == nil {
		return fmt.Errorf("%s: %w (its directory %s is here)", vm, ErrHere, state.Dir{Root: d.env.StateDir}.VMDir(vm))
	}
	return nil
}

// incomingFile is where file of vm arrives, once vm may move here: in its
// incoming directory (made), a retry's copy removed.
func (d *Daemon) incomingFile(vm, file string) (string, error) {
	if err := d.mayReceive(vm); err != nil {
		return "", err
	}
	dir := d.incoming(vm)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	dst := filepath.Join(dir, file)
	os.Remove(dst)
	return dst, nil
}

// Receive takes one file of vm from the peer from, into the VM's incoming
// directory; it is kept only when its digest matches the sender's.
func (d *Daemon) Receive(from, vm, file string, body io.Reader) (transfer.Stats, error) {
	if !movedFileRE.MatchString(file) {
		return transfer.Stats{}, fmt.Errorf("%q is not a file a move brings", file)
	}
	dst, err := d.incomingFile(vm, file)
	if err != nil {
		return transfer.Stats{}, err
	}
	st, err := transfer.Receive(body, dst)
	if err != nil {
		return st, fmt.Errorf("receive %s of %s from %s: %w", file, vm, from, err)
	}
	d.log.Info("move: file received", "vm", vm, "from", from, "file", file, "data", st.Data, "wire", st.Wire)
	if strings.HasPrefix(file, savestate.PinPrefix) {
		if err := d.peers.pins.Keep(dst, st.SHA256); err != nil {
			d.log.Error("move: keep a read-only disk for later moves", "vm", vm, "file", file, "err", err)
		}
	}
	return st, nil
}

// ErrNotCached says this host kept no file with the digest asked for.
var ErrNotCached = errors.New("no file with that digest is kept here")

// ReceiveCached takes one read-only disk of vm (a pin) from the bytes this
// host kept from an earlier move, by the digest the peer from names:
// linked into the VM's incoming directory, as Receive would have written
// it.
func (d *Daemon) ReceiveCached(from, vm, file, sum string) (transfer.Stats, error) {
	if !movedFileRE.MatchString(file) || !strings.HasPrefix(file, savestate.PinPrefix) {
		return transfer.Stats{}, fmt.Errorf("%q is not a read-only disk a move brings", file)
	}
	dst, err := d.incomingFile(vm, file)
	if err != nil {
		return transfer.Stats{}, err
	}
	ok, err := d.peers.pins.Link(sum, dst)
	if err != nil {
		return transfer.Stats{}, fmt.Errorf("%s of %s: %w", file, vm, err)
	}
	if !ok {
		return transfer.Stats{}, fmt.Errorf("%s of %s: %w", file, vm, ErrNotCached)
	}
	fi, err := os.Stat(dst)
	if err != nil {
		return transfer.Stats{}, err
	}
	st := transfer.Stats{Size: fi.Size(), Data: allocated(dst), SHA256: sum}
	d.log.Info("move: file linked from the kept ones", "vm", vm, "from", from, "file", file, "sha256", sum)
	return st, nil
}

// CommitMove runs vm, whose files arrived, on this host: they go into its
// directory (with the empty volumes c.Volumes a live move copies into
// while its hypervisor waits for the guest), and it is started, as this
// host's file says when the file names it (it comes back), else as
// c.Entry put through the API. A VM that does not start (or resume)
// leaves nothing here: its files are removed and the error says why (the
// sender keeps its copy).
func (d *Daemon) CommitMove(ctx context.Context, vm string, c apitypes.PeerCommit) error {
	if err := d.claim(vm); err != nil {
		return err
	}
	defer d.release(vm)
	if err := d.mayReceive(vm); err != nil {
		return err
	}
	dir := state.Dir{Root: d.env.StateDir}
	if err := os.MkdirAll(filepath.Dir(dir.VMDir(vm)), 0o711); err != nil {
		return err
	}
	if err := makeVolumes(d.incoming(vm), c.Volumes); err != nil {
		d.AbortMove(vm)
		return fmt.Errorf("make %s's volumes: %w", vm, err)
	}
	// A live move's sockets left by an earlier one would tell the sender
	// to begin before this hypervisor waits.
	nbd, migration := d.env.Layout(vm).MoveSockets()
	os.Remove(nbd)
	os.Remove(migration)
	if err := os.Rename(d.incoming(vm), dir.VMDir(vm)); err != nil {
		return fmt.Errorf("install %s's files: %w", vm, err)
	}
	resumes, err := savestate.InstallMoved(dir.VMDir(vm))
	if err == nil {
		err = d.runMovedIn(vm, c, resumes)
	}
	if err != nil {
		d.log.Error("move: the VM did not start here", "vm", vm, "from", c.From, "err", err)
		if d.IsPut(vm) {
			d.Remove(vm, true)
		} else {
			d.sup.Stop(vm)
			d.forget(vm)
		}
		if kept := d.keepFailedLogs(vm); kept != "" {
			err = fmt.Errorf("%w (its console on %s: %s)", err, d.HostName(), kept)
		}
		os.RemoveAll(dir.VMDir(vm))
		return err
	}
	d.log.Info("move: running here", "vm", vm, "from", c.From)
	return nil
}

// keepFailedLogs keeps the console and hypervisor logs of vm, which moved
// here and did not come up, in state.Dir.FailedMovesDir (dropping those
// older than a week), and returns the console log's path there ("" when
// none was kept).
func (d *Daemon) keepFailedLogs(vm string) string {
	dir := state.Dir{Root: d.env.StateDir}.FailedMovesDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return ""
	}
	if entries, err := os.ReadDir(dir); err == nil {
		for _, e := range entries {
			if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > 7*24*time.Hour {
				os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
	lay := d.env.Layout(vm)
	prefix := filepath.Join(dir, vm+"-"+time.Now().UTC().Format("20060102T150405Z"))
	os.Rename(lay.VMMLog(), prefix+".vmm.log")
	if err := os.Rename(lay.ConsoleLog(), prefix+".console.log"); err != nil {
		return ""
	}
	return prefix + ".console.log"
}

// resumeTimeout bounds how long a guest moved running may take to be
// ready here once resumed (its clock set, this host let in).
const resumeTimeout = 2 * time.Minute

// waitReady waits until vm, just resumed, is running and ready; a VM that
// failed, stopped or was restarted meanwhile did not resume.
func (d *Daemon) waitReady(vm string, timeout time.Duration) error {
	for deadline := time.Now().Add(timeout); ; time.Sleep(50 * time.Millisecond) {
		st, ok := d.sup.Status(vm)
		switch {
		case !ok:
			return fmt.Errorf("%s is gone", vm)
		case st.Restarts > 0 || (st.State != supervisor.Starting && st.State != supervisor.Running):
			return fmt.Errorf("%s did not resume here: %s %s", vm, st.State, st.Failure)
		case st.State == supervisor.Running:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("%s not ready %s after it resumed here", vm, timeout)
		}
	}
}

// runMovedIn starts a VM whose files are in place; one that resumes is
// waited for until it is ready: the sender still holds the guest (paused,
// or its saved state) and lets go only of one that runs here.
func (d *Daemon) runMovedIn(vm string, c apitypes.PeerCommit, resumes bool) error {
	ready := func() error {
		if !resumes {
			return nil
		}
		return d.waitReady(vm, resumeTimeout)
	}
	dir := state.Dir{Root: d.env.StateDir}
	moved, err := dir.MovedVMs()
	if err != nil {
		return err
	}
	if _, back := moved[vm]; back {
		if err := dir.RemoveMoved(vm); err != nil {
			return err
		}
		d.mu.Lock()
		name, data := d.file, d.fileData
		d.mu.Unlock()
		_, err := d.ApplyFile(name, data)
		if st, _ := d.sup.Status(vm); err == nil && st.PID == 0 {
			err = fmt.Errorf("%s did not start: %s", vm, st.Failure)
		}
		if err == nil {
			err = ready()
		}
		if err != nil {
			// It stays the other host's: recorded so again, and the
			// file applied without it.
			dir.WriteMoved(vm, c.From, time.Now())
			d.sup.Stop(vm)
			d.ApplyFile(name, data)
			return fmt.Errorf("apply the file with %s back: %w", vm, err)
		}
		return nil
	}
	res, err := d.Put(vm, []byte(c.Entry))
	if errors.Is(err, ErrInvalid) && res != nil {
		return fmt.Errorf("%s: %w", vm, res.Problems)
	}
	if err == nil {
		err = ready()
	}
	if err != nil {
		return err
	}
	return dir.WriteArrived(vm)
}

// ExpectMove records that the VM vm, which this host's file names now,
// lives on the peer from and is to be moved here (a GitOps deploy changed
// its host:): this host's applies leave it out, rather than make it again
// on empty volumes, until its move comes.
func (d *Daemon) ExpectMove(vm, from string) error {
	dir := state.Dir{Root: d.env.StateDir}
	if _, known := d.sup.Status(vm); known {
		return nil // it is here already (it came before this deploy)
	}
	if _, err := os.Stat(dir.VMDir(vm)); err == nil {
		return nil // its data is here
	}
	d.log.Info("move: expecting a VM", "vm", vm, "from", from)
	return dir.WriteMoved(vm, from, time.Now())
}

// adoptArrived hands each VM that arrived by a move, held as put through
// the API, to the file about to be applied when it names the VM: the API
// entry goes, the running VM stays (its spec is the file's). And a VM
// recorded as moved away that the file does not name any more is
// forgotten.
func (d *Daemon) adoptArrived(source []byte) {
	dir := state.Dir{Root: d.env.StateDir}
	named := func(vm string) bool {
		_, err := config.Entry(source, vm, "")
		return err == nil
	}
	d.mu.Lock()
	for vm := range d.api {
		if dir.Arrived(vm) && named(vm) {
			delete(d.api, vm)
			dir.RemoveAPIVM(vm)
			dir.RemoveArrived(vm)
			d.log.Info("move: the file takes over a VM that arrived", "vm", vm)
		}
	}
	d.mu.Unlock()
	moved, _ := dir.MovedVMs()
	for vm := range moved {
		if !named(vm) {
			dir.RemoveMoved(vm)
		}
	}
}

// AbortMove drops what arrived of vm. A live move's hypervisor that waits
// for the guest is given an empty migration (a connection closed at
// once), so that its start fails and the commit removes the VM.
func (d *Daemon) AbortMove(vm string) error {
	d.peers.mu.Lock()
	committing := d.peers.moving[vm]
	d.peers.mu.Unlock()
	if committing {
		_, migration := d.env.Layout(vm).MoveSockets()
		go func() {
			for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
				if conn, err := net.DialTimeout("unix", migration, time.Second); err == nil {
					conn.Close()
					return
				}
			}
		}()
	}
	return os.RemoveAll(d.incoming(vm))
}
