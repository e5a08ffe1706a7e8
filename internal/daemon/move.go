package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/peer"
	"microvm.dev/microvm/internal/state"
	"microvm.dev/microvm/internal/transfer"
	"microvm.dev/microvm/internal/vmssh"
	"microvm.dev/microvm/internal/volume"
)

// peering is what moving VMs between hosts needs: this host's name among
// the file's peers, its identity, and the VMs being moved now.
type peering struct {
	name string
	id   *peer.Identity

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

// Move moves vm to the peer host to: the VM is shut down cleanly here,
// its volumes and SSH host key streamed to the other daemon over the
// peers' TLS (allocated ranges only, compressed, each file checked by its
// digest there), and booted there; then this host forgets it and deletes
// its copy. Until the other host runs it, the VM and its data stay here:
// any failure on the way (the other host refusing, unreachable, out of
// room, dying half-way) restarts it here, and the other host keeps
// nothing.
func (d *Daemon) Move(ctx context.Context, vm, to string) (*apitypes.MoveResult, error) {
	if err := d.claim(vm); err != nil {
		return nil, err
	}
	defer d.release(vm)
	spec := d.VMConfig(vm)
	if spec == nil {
		return nil, fmt.Errorf("%s: %w", vm, ErrUnknownVM)
	}
	c, err := d.peerClient(to)
	if err != nil {
		return nil, fmt.Errorf("move %s to %s: %w", vm, to, err)
	}
	t0 := time.Now()
	res := &apitypes.MoveResult{VM: vm, From: d.HostName(), To: to, Mode: "cold", Files: []apitypes.MovedFile{}}
	files := d.movingFiles(spec)
	if err := d.checkRoom(ctx, c, files); err != nil {
		return nil, fmt.Errorf("move %s to %s: %w", vm, to, err)
	}
	entry, err := d.entryOf(vm, to)
	if err != nil {
		return nil, fmt.Errorf("move %s to %s: %w", vm, to, err)
	}
	st, _ := d.sup.Status(vm)
	running := st.PID != 0
	if running {
		if err := d.sup.Stop(vm); err != nil {
			return nil, fmt.Errorf("move %s to %s: stop it here: %w", vm, to, err)
		}
	}
	down := time.Now()
	err = d.sendAndCommit(ctx, c, vm, files, entry, res)
	if errors.Is(err, errCommitUnknown) {
		// The commit was asked and its answer lost: the other host may run
		// the VM. Starting it here too could make two running copies.
		switch runs, qerr := c.has(vm); {
		case qerr != nil:
			d.log.Error("move: whether the other host runs the VM is unknown", "vm", vm, "to", to, "err", qerr)
			return nil, fmt.Errorf("move %s to %s: %w; whether %s runs it is unknown (%v): %s keeps its data and leaves it stopped; run microvm status %s on %s, and start it here only if it is not there",
				vm, to, err, to, qerr, res.From, vm, to)
		case runs:
			err = nil
		}
	}
	if err != nil {
		// Nothing is kept there; the VM runs here again, on its data.
		abort, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		c.do(abort, http.MethodDelete, "/peer/v1/incoming/"+url.PathEscape(vm), nil, nil)
		cancel()
		msg := fmt.Sprintf("move %s to %s: %v; %s keeps %s and its data", vm, to, err, res.From, vm)
		if running {
			if serr := d.sup.Start(context.Background(), spec); serr != nil {
				msg += fmt.Sprintf(", but starting it here again failed: %v", serr)
			} else {
				msg += ", running again"
			}
		}
		d.log.Error("move failed", "vm", vm, "to", to, "err", err)
		return nil, errors.New(msg)
	}
	res.Downtime = time.Since(down).Seconds()
	if err := d.forgetMoved(vm, to); err != nil {
		d.log.Error("forget the moved VM here", "vm", vm, "to", to, "err", err)
	}
	res.Seconds = time.Since(t0).Seconds()
	d.log.Info("moved", "vm", vm, "to", to, "seconds", res.Seconds, "downtime", res.Downtime)
	return res, nil
}

// checkRoom asks the peer who it is and whether its state directory has
// room for the files' data.
func (d *Daemon) checkRoom(ctx context.Context, c *peerClient, files []moveFile) error {
	var hello apitypes.PeerHello
	if err := c.do(ctx, http.MethodGet, "/peer/v1/hello", nil, &hello); err != nil {
		return err
	}
	if hello.Host != c.name {
		return fmt.Errorf("the daemon at %s says it is %q, not %s", c.base, hello.Host, c.name)
	}
	var need int64
	for _, f := range files {
		need += allocated(f.path)
	}
	if need > hello.FreeBytes {
		return fmt.Errorf("host %s has %d bytes free, the VM's data needs %d", c.name, hello.FreeBytes, need)
	}
	return nil
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
		got, err := sendFile(ctx, c, vm, f)
		if err != nil {
			return fmt.Errorf("send %s: %w", f.name, err)
		}
		res.Files = append(res.Files, got)
	}
	body, _ := json.Marshal(apitypes.PeerCommit{From: d.HostName(), Entry: string(entry)})
	err := c.do(ctx, http.MethodPost, "/peer/v1/incoming/"+url.PathEscape(vm)+"/commit", bytes.NewReader(body), nil)
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

// has asks the peer whether it has the VM now.
func (c *peerClient) has(vm string) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var st struct {
		Known bool `json:"known"`
	}
	if err := c.do(ctx, http.MethodGet, "/peer/v1/vms/"+url.PathEscape(vm), nil, &st); err != nil {
		return false, err
	}
	return st.Known, nil
}

// sendFile streams one file and checks the peer received what was sent.
func sendFile(ctx context.Context, c *peerClient, vm string, f moveFile) (apitypes.MovedFile, error) {
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

// DrainResult is POST /v1/drain: the VMs moved away, and those that could
// not be (still here, with why).
type DrainResult = apitypes.DrainResult

// Drain moves every VM of this host to the peers to (every other peer of
// the file when empty), parallel at a time: each goes to the one with the
// most room then. A VM that cannot move stays here, running as it was,
// and is named with the reason.
func (d *Daemon) Drain(ctx context.Context, to []string, parallel int) (*DrainResult, error) {
	cfg := d.applied()
	if cfg == nil {
		return nil, ErrNoFile
	}
	if d.HostName() == "" {
		return nil, ErrNoPeers
	}
	if len(to) == 0 {
		for name := range cfg.Peers {
			if name != d.HostName() {
				to = append(to, name)
			}
		}
	}
	if len(to) == 0 {
		return nil, fmt.Errorf("drain: the file's peers name no other host: %w", ErrUnknownPeer)
	}
	for _, h := range to {
		if _, ok := cfg.Peers[h]; !ok || h == d.HostName() {
			return nil, fmt.Errorf("drain to %q: %w", h, ErrUnknownPeer)
		}
	}
	res := &DrainResult{Moved: []apitypes.MoveResult{}, Failed: map[string]string{}}
	var mu sync.Mutex
	sem := make(chan struct{}, max(1, parallel))
	var wg sync.WaitGroup
	for _, st := range d.List() {
		vm := st.Name
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			target, err := d.roomiest(ctx, to)
			var moved *apitypes.MoveResult
			if err == nil {
				moved, err = d.Move(ctx, vm, target)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.Failed[vm] = err.Error()
				return
			}
			res.Moved = append(res.Moved, *moved)
		})
	}
	wg.Wait()
	return res, nil
}

// roomiest is the host of hosts with the most free room now.
func (d *Daemon) roomiest(ctx context.Context, hosts []string) (string, error) {
	best, room := "", int64(-1)
	var errs []error
	for _, h := range hosts {
		c, err := d.peerClient(h)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var hello apitypes.PeerHello
		if err := c.do(ctx, http.MethodGet, "/peer/v1/hello", nil, &hello); err != nil {
			errs = append(errs, err)
			continue
		}
		if hello.FreeBytes > room {
			best, room = h, hello.FreeBytes
		}
	}
	if best == "" {
		return "", fmt.Errorf("no host to move to: %w", errors.Join(errs...))
	}
	return best, nil
}
