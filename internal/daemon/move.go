package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/peer"
	"microvm.dev/microvm/internal/pincache"
	"microvm.dev/microvm/internal/savestate"
	"microvm.dev/microvm/internal/state"
	"microvm.dev/microvm/internal/supervisor"
	"microvm.dev/microvm/internal/transfer"
	"microvm.dev/microvm/internal/vmssh"
	"microvm.dev/microvm/internal/volume"
)

// peering is what moving VMs between hosts needs: this host's name among
// the file's peers, its identity, and the VMs being moved now.
type peering struct {
	name string
	id   *peer.Identity
	// pins are the read-only disks kept from moves here, and the digests
	// of those sent from here (pincache).
	pins *pincache.Cache

	mu     sync.Mutex
	moving map[string]bool
}

// Errors of a move.
var (
	// ErrNoPeers says this daemon was started without --peer-listen.
	ErrNoPeers = errors.New("this daemon moves no VMs: start it with --peer-listen (and --host-name)")
	// ErrUnknownPeer says the host is not in the file's peers.
	ErrUnknownPeer = errors.New("no such host in the file's peers")
	// ErrMoving says the VM is being moved already.
	ErrMoving = errors.New("the VM is being moved already")
)

// EnablePeers lets the daemon move VMs to and from the file's peers, as
// the host name with identity id.
func (d *Daemon) EnablePeers(name string, id *peer.Identity) {
	d.peers.mu.Lock()
	defer d.peers.mu.Unlock()
	d.peers.name, d.peers.id, d.peers.moving = name, id, map[string]bool{}
	d.peers.pins = pincache.New(state.Dir{Root: d.env.StateDir}.PinCacheDir())
}

// Moving says whether vm is being moved in or out of this host now.
func (d *Daemon) Moving(vm string) bool {
	d.peers.mu.Lock()
	defer d.peers.mu.Unlock()
	return d.peers.moving[vm]
}

// HostName is this host's name among the file's peers ("" without them).
func (d *Daemon) HostName() string {
	d.peers.mu.Lock()
	defer d.peers.mu.Unlock()
	return d.peers.name
}

// TrustPeer says which of the applied file's peers key is, if any.
func (d *Daemon) TrustPeer(key string) (string, bool) {
	cfg := d.applied()
	if cfg == nil {
		return "", false
	}
	for name, p := range cfg.Peers {
		if p.Key == key {
			return name, true
		}
	}
	return "", false
}

// claim marks vm as being moved (in or out); release unmarks it.
func (d *Daemon) claim(vm string) error {
	d.peers.mu.Lock()
	defer d.peers.mu.Unlock()
	if d.peers.id == nil {
		return ErrNoPeers
	}
	if d.peers.moving[vm] {
		return fmt.Errorf("%s: %w", vm, ErrMoving)
	}
	d.peers.moving[vm] = true
	return nil
}

func (d *Daemon) release(vm string) {
	d.peers.mu.Lock()
	defer d.peers.mu.Unlock()
	delete(d.peers.moving, vm)
}

// peerClient talks to one peer's daemon.
type peerClient struct {
	http *http.Client
	base string
	name string
}

func (d *Daemon) peerClient(to string) (*peerClient, error) {
	cfg := d.applied()
	if cfg == nil {
		return nil, ErrNoFile
	}
	p, ok := cfg.Peers[to]
	if !ok {
		return nil, fmt.Errorf("%q: %w", to, ErrUnknownPeer)
	}
	if to == d.HostName() {
		return nil, fmt.Errorf("%q is this host", to)
	}
	return &peerClient{http: d.peers.id.Client(p.Key, 0), base: "https://" + p.Address, name: to}, nil
}

// do sends a request and decodes a JSON answer into out; an answer other
// than 200 is an error with the peer's message.
func (c *peerClient) do(ctx context.Context, method, path string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("host %s: %w", c.name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e apitypes.ErrorResponse
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return &peerAnswer{fmt.Sprintf("host %s: %s", c.name, e.Error)}
		}
		return &peerAnswer{fmt.Sprintf("host %s: %s: %s", c.name, resp.Status, bytes.TrimSpace(data))}
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// moveFile is one file of a VM that goes with it.
type moveFile struct{ name, path string }

// movingFiles are the files of vm that go with it: its volumes, and its
// SSH host key (clients keep trusting it).
func (d *Daemon) movingFiles(vm *config.VM) []moveFile {
	vmDir := state.Dir{Root: d.env.StateDir}.VMDir(vm.Name)
	var out []moveFile
	for _, v := range vm.Volumes {
		// A volume not made yet (a VM never started) has nothing to send.
		if p := volume.Path(vmDir, v.Name); fileExists(p) {
			out = append(out, moveFile{v.Name + ".img", p})
		}
	}
	if key := vmssh.HostKeyPath(d.env.StateDir, vm.Name); fileExists(key) {
		out = append(out, moveFile{filepath.Base(key), key})
	}
	return out
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// allocated is the bytes of a file's data on disk (its holes not).
func allocated(path string) int64 {
	var st syscall.Stat_t
	if syscall.Stat(path, &st) != nil {
		return 0
	}
	return st.Blocks * 512
}

// Move moves vm to the peer host to, in mode (live, saved or cold; ""
// is live): a running VM moves live where its hypervisor and store allow
// it (moveLive), else with its state saved, else shut down cleanly; its
// volumes, SSH host key and saved state are streamed to the other daemon
// over the peers' TLS (allocated ranges only, compressed, each file
// checked by its digest there), which resumes or boots it; then this host
// forgets it and deletes its copy. Until the other host runs it, the VM
// and its data stay here: any failure on the way (the other host
// refusing, unreachable, out of room, dying half-way) runs it here again,
// and the other host keeps nothing.
func (d *Daemon) Move(ctx context.Context, vm, to, mode string) (*apitypes.MoveResult, error) {
	mode, err := moveMode(mode)
	if err != nil {
		return nil, fmt.Errorf("move %s: %w", vm, err)
	}
	if err := d.claim(vm); err != nil {
		return nil, err
	}
	defer d.release(vm)
	spec := d.VMConfig(vm)
	switch {
	case spec == nil:
		return nil, fmt.Errorf("%s: %w", vm, ErrUnknownVM)
	case spec.From != "":
		return nil, fmt.Errorf("move %s: a clone is not moved: clone %s on %s instead", vm, spec.From, to)
	case spec.Template:
		return nil, fmt.Errorf("move %s: a template is not moved: its state is made where its clones start", vm)
	}
	c, err := d.peerClient(to)
	if err != nil {
		return nil, fmt.Errorf("move %s to %s: %w", vm, to, err)
	}
	t0 := time.Now()
	res := &apitypes.MoveResult{VM: vm, From: d.HostName(), To: to, Mode: modeCold, Files: []apitypes.MovedFile{}}
	files := d.movingFiles(spec)
	hello, err := d.checkRoom(ctx, c, files)
	if err != nil {
		return nil, fmt.Errorf("move %s to %s: %w", vm, to, err)
	}
	entry, err := d.entryOf(vm, to)
	if err != nil {
		return nil, fmt.Errorf("move %s to %s: %w", vm, to, err)
	}
	st, _ := d.sup.Status(vm)
	running := st.PID != 0
	if running && mode != modeCold {
		// The guest goes on running there: the other host is let in.
		if err := d.letIn(vm, hello.SSHKey); err != nil {
			res.Fallback = "neither live nor saved: the guest does not let the other host in: " + err.Error()
			mode = modeCold
		}
	}
	if running && mode == modeLive {
		r, why := d.liveGuest(vm)
		if why == "" {
			err := d.moveLive(ctx, c, r, spec, files, entry, res)
			if err == nil {
				return d.moved(vm, to, res, t0), nil
			}
			d.log.Error("live move failed", "vm", vm, "to", to, "err", err)
			if errors.Is(err, errGuestHeld) {
				return nil, fmt.Errorf("move %s to %s: %w", vm, to, err)
			}
			// It runs on here, as it was: it moves saved instead.
			why = "it failed: " + err.Error()
			res.Files = res.Files[:0]
		}
		res.Fallback = "not live: " + why
		mode = modeSaved
	}
	down := time.Now()
	if running {
		if err := d.stopForMove(vm, mode == modeSaved, res); err != nil {
			return nil, fmt.Errorf("move %s to %s: %w", vm, to, err)
		}
	}
	if res.Mode == modeSaved {
		saved, err := d.savedFiles(vm)
		if err == nil {
			files = append(files, saved...)
			_, err = d.checkRoom(ctx, c, files)
		}
		if err != nil {
			return nil, d.keepHere(c, spec, running, res, err)
		}
	}
	err = d.sendAndCommit(ctx, c, vm, files, entry, res)
	if errors.Is(err, errCommitUnknown) {
		// The commit was asked and its answer lost: the other host may run
		// the VM. Starting it here too could make two running copies.
		switch runs, qerr := c.runs(vm); {
		case qerr != nil:
			d.log.Error("move: whether the other host runs the VM is unknown", "vm", vm, "to", to, "err", qerr)
			return nil, fmt.Errorf("move %s to %s: %w; whether %s runs it is unknown (%v): %s keeps its data and leaves it stopped; run microvm status %s on %s, and start it here only if it is not there",
				vm, to, err, to, qerr, res.From, vm, to)
		case runs:
			err = nil
		}
	}
	if err != nil {
		return nil, d.keepHere(c, spec, running, res, err)
	}
	res.Downtime = time.Since(down).Seconds()
	return d.moved(vm, to, res, t0), nil
}

// ErrMoveMode says a move's mode is none of live, saved and cold.
var ErrMoveMode = errors.New("a move's mode is live, saved or cold")

// moveMode checks a move's mode ("" is live).
func moveMode(mode string) (string, error) {
	switch mode {
	case "":
		return modeLive, nil
	case modeLive, modeSaved, modeCold:
		return mode, nil
	}
	return "", fmt.Errorf("mode %q: %w", mode, ErrMoveMode)
}

// moved ends a move the other host runs the VM of: this host forgets it.
func (d *Daemon) moved(vm, to string, res *apitypes.MoveResult, t0 time.Time) *apitypes.MoveResult {
	if err := d.forgetMoved(vm, to); err != nil {
		d.log.Error("forget the moved VM here", "vm", vm, "to", to, "err", err)
	}
	res.Seconds = time.Since(t0).Seconds()
	d.log.Info("moved", "vm", vm, "to", to, "mode", res.Mode, "fallback", res.Fallback, "seconds", res.Seconds, "downtime", res.Downtime)
	return res
}

// The modes of a move (apitypes.MoveResult.Mode).
const (
	modeCold  = "cold"
	modeSaved = "saved"
	modeLive  = "live"
)

// stopForMove stops a running VM for its move: with its state saved
// when save is set and its hypervisor and store allow it (the move is
// then a saved one, and the guest resumes there), else cleanly, saying
// why.
func (d *Daemon) stopForMove(vm string, save bool, res *apitypes.MoveResult) error {
	if !save {
		return d.sup.Stop(vm)
	}
	out, err := d.sup.Save(vm)
	switch {
	case errors.Is(err, supervisor.ErrNotRunning):
		// Still starting: it is stopped, not saved.
		res.Fallback = joinWhy(res.Fallback, "not saved: it was not running yet")
		return d.sup.Stop(vm)
	case err != nil:
		return fmt.Errorf("stop it here: %w", err)
	case out.Saved:
		res.Mode = modeSaved
	default:
		res.Fallback = joinWhy(res.Fallback, "not saved (shut down instead): "+out.Fallback)
	}
	return nil
}

func joinWhy(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// savedFiles are the files of a VM's saved state that go with it: the
// state, its record for the other host, and the read-only disks it ran
// on.
func (d *Daemon) savedFiles(vm string) ([]moveFile, error) {
	dir := savestate.Of(state.Dir{Root: d.env.StateDir}.VMDir(vm))
	meta, m, err := dir.ForMove(d.HostName())
	if err != nil {
		return nil, err
	}
	files := []moveFile{{savestate.MovedState, dir.StateFile()}, {savestate.MovedMeta, meta}}
	return append(files, pinFiles(m.Key.Pins)...), nil
}

// pinFiles are the read-only disks a resumed guest runs on (pin name →
// path), as files a move sends.
func pinFiles(pins map[string]string) []moveFile {
	var files []moveFile
	for _, name := range slices.Sorted(maps.Keys(pins)) {
		files = append(files, moveFile{savestate.PinPrefix + name, pins[name]})
	}
	return files
}

// keepHere ends a move that failed before the other host ran the VM:
// nothing is kept there, and the VM runs here again on its data (resumed
// from its saved state, when it was saved for the move).
func (d *Daemon) keepHere(c *peerClient, spec *config.VM, running bool, res *apitypes.MoveResult, err error) error {
	to := c.name
	d.abortIncoming(c, spec.Name)
	msg := fmt.Sprintf("move %s to %s: %v; %s keeps %s and its data", spec.Name, to, err, res.From, spec.Name)
	if running {
		if serr := d.sup.Start(context.Background(), spec); serr != nil {
			msg += fmt.Sprintf(", but starting it here again failed: %v", serr)
		} else {
			msg += ", running again"
			d.onlyHere(spec.Name)
		}
	}
	d.log.Error("move failed", "vm", spec.Name, "to", to, "err", err)
	return errors.New(msg)
}

// checkRoom asks the peer who it is and whether its state directory has
// room for the files' data; it returns what the peer said.
func (d *Daemon) checkRoom(ctx context.Context, c *peerClient, files []moveFile) (apitypes.PeerHello, error) {
	var hello apitypes.PeerHello
	if err := c.do(ctx, http.MethodGet, "/peer/v1/hello", nil, &hello); err != nil {
		return hello, err
	}
	if hello.Host != c.name {
		return hello, fmt.Errorf("the daemon at %s says it is %q, not %s", c.base, hello.Host, c.name)
	}
	var need int64
	for _, f := range files {
		need += allocated(f.path)
	}
	if need > hello.FreeBytes {
		return hello, fmt.Errorf("host %s has %d bytes free, the VM's data needs %d", c.name, hello.FreeBytes, need)
	}
	return hello, nil
}

// entryOf is vm's entry for the host to: its entry put through the API,
// or its own entry in the file (its host: set to the other host).
func (d *Daemon) entryOf(vm, to string) ([]byte, error) {
	d.mu.Lock()
	api, file := d.api[vm], d.fileData
	d.mu.Unlock()
	if api != nil {
		return api, nil
	}
	return config.Entry(file, vm, to)
}

// sendAndCommit streams each file to the peer and asks it to run the VM.
func (d *Daemon) sendAndCommit(ctx context.Context, c *peerClient, vm string, files []moveFile, entry []byte, res *apitypes.MoveResult) error {
	for _, f := range files {
		got, err := d.sendFile(ctx, c, vm, f)
		if err != nil {
			return fmt.Errorf("send %s: %w", f.name, err)
		}
		res.Files = append(res.Files, got)
	}
	body, _ := json.Marshal(apitypes.PeerCommit{From: d.HostName(), Entry: string(entry)})
	var there apitypes.VMStatus
	err := c.do(ctx, http.MethodPost, "/peer/v1/incoming/"+url.PathEscape(vm)+"/commit", bytes.NewReader(body), &there)
	res.Boot = there.Boot
	if _, answered := errors.AsType[*peerAnswer](err); err != nil && !answered {
		return fmt.Errorf("%w: %w", errCommitUnknown, err)
	}
	return err
}

// errCommitUnknown says a commit got no answer: whether the other host
// runs the VM is to be asked.
var errCommitUnknown = errors.New("the other host did not answer the commit")

// peerAnswer is an error the peer answered with (not a lost connection).
type peerAnswer struct{ msg string }

func (e *peerAnswer) Error() string { return e.msg }

// vmState asks the peer what it has of vm.
func (c *peerClient) vmState(vm string) (apitypes.PeerVM, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var st apitypes.PeerVM
	err := c.do(ctx, http.MethodGet, "/peer/v1/vms/"+url.PathEscape(vm), nil, &st)
	return st, err
}

// runs asks the peer whether it runs the VM now, waiting while it is
// still taking it (a commit whose answer was lost may be under way): true
// once it runs there, false once it does not have it.
func (c *peerClient) runs(vm string) (bool, error) {
	for deadline := time.Now().Add(resumeTimeout + time.Minute); ; time.Sleep(time.Second) {
		st, err := c.vmState(vm)
		switch {
		case err != nil:
			return false, err
		case !st.Known:
			return false, nil
		case st.State == apitypes.Running && !st.Moving:
			return true, nil
		case time.Now().After(deadline):
			return false, fmt.Errorf("host %s still has %s %s", c.name, vm, st.State)
		}
	}
}

// sendFile sends one file of vm to the peer: a read-only disk whose
// bytes the peer kept from an earlier move is linked there from its
// cache, anything else streamed (streamFile).
func (d *Daemon) sendFile(ctx context.Context, c *peerClient, vm string, f moveFile) (apitypes.MovedFile, error) {
	if !strings.HasPrefix(f.name, savestate.PinPrefix) {
		return streamFile(ctx, c, vm, f)
	}
	if sum, ok := d.peers.pins.Sum(f.path); ok {
		body, _ := json.Marshal(apitypes.PeerCached{SHA256: sum})
		var got transfer.Stats
		err := c.do(ctx, http.MethodPost, "/peer/v1/incoming/"+url.PathEscape(vm)+"/"+url.PathEscape(f.name)+"/cached", bytes.NewReader(body), &got)
		if err == nil && got.SHA256 == sum {
			return apitypes.MovedFile{Name: f.name, Size: got.Size, Data: got.Data, SHA256: sum, Cached: true}, nil
		}
		if _, answered := errors.AsType[*peerAnswer](err); err != nil && !answered {
			return apitypes.MovedFile{}, err
		}
		// Not kept there (or a peer that keeps none): sent.
	}
	got, err := streamFile(ctx, c, vm, f)
	if err == nil {
		d.peers.pins.Note(f.path, got.SHA256)
	}
	return got, err
}

// streamFile streams one file and checks the peer received what was sent.
func streamFile(ctx context.Context, c *peerClient, vm string, f moveFile) (apitypes.MovedFile, error) {
	src, err := os.Open(f.path)
	if err != nil {
		return apitypes.MovedFile{}, err
	}
	defer src.Close()
	pr, pw := io.Pipe()
	sent := make(chan transfer.Stats, 1)
	go func() {
		st, err := transfer.Send(pw, src)
		sent <- st
		pw.CloseWithError(err)
	}()
	var got transfer.Stats
	err = c.do(ctx, http.MethodPut, "/peer/v1/incoming/"+url.PathEscape(vm)+"/"+url.PathEscape(f.name), pr, &got)
	pr.CloseWithError(errors.New("the request ended"))
	st := <-sent
	if err != nil {
		return apitypes.MovedFile{}, err
	}
	if got.SHA256 != st.SHA256 {
		return apitypes.MovedFile{}, fmt.Errorf("host %s received digest %s, sent %s", c.name, got.SHA256, st.SHA256)
	}
	return apitypes.MovedFile{Name: f.name, Size: st.Size, Data: st.Data, Wire: st.Wire, SHA256: st.SHA256}, nil
}

// forgetMoved drops a VM that runs on another host now: one put through
// the API is removed; one of the file is recorded as moved (this host's
// applies leave it out) and the file applied again, which removes its
// network. Its directory, its data included, is deleted.
func (d *Daemon) forgetMoved(vm, to string) error {
	dir := state.Dir{Root: d.env.StateDir}
	if d.IsPut(vm) {
		dir.RemoveArrived(vm)
		return d.Remove(vm, true)
	}
	if err := dir.WriteMoved(vm, to, time.Now()); err != nil {
		return err
	}
	d.mu.Lock()
	name, data := d.file, d.fileData
	d.mu.Unlock()
	if _, err := d.ApplyFile(name, data); err != nil {
		return fmt.Errorf("apply the file without %s: %w", vm, err)
	}
	return os.RemoveAll(dir.VMDir(vm))
}
