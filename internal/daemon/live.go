package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/savestate"
	"microvm.dev/microvm/internal/transfer"
	"microvm.dev/microvm/internal/vmm"
	"microvm.dev/microvm/internal/volume"
)

// LiveDowntime is the pause a live move asks the hypervisor to keep the
// guest's last pass within.
const LiveDowntime = 300 * time.Millisecond

// The streams of a live move, each a unix socket of the VM's
// (vmm.Layout.MoveSockets) forwarded between the hosts.
const (
	streamNBD       = "nbd"
	streamMigration = "migration"
)

// errGuestHeld says a live move's guest, its memory gone over, is left
// paused here, its volumes as they were: it does not run there, or
// whether it does is unknown, or it could not run here again.
var errGuestHeld = errors.New("the guest is held paused here: check the other host (microvm status VM there), and only if it does not run it there, stop and start it here to boot it again on its volumes")

// liveGuest is the running guest of vm, when it can move while it runs;
// else why not.
func (d *Daemon) liveGuest(vm string) (*launch.Running, string) {
	r, err := d.guest(vm)
	if err != nil {
		return nil, err.Error()
	}
	if why := r.CanMoveLive(); why != "" {
		return nil, why
	}
	return r, ""
}

// moveLive moves the running guest r of spec, whose own files (volumes,
// SSH host key) are vmFiles, to the peer c while it runs: the files that
// go with it (its SSH host key, the read-only disks it runs on, the
// record the other host resumes it by) first; then the other host
// is asked to take it, with empty volumes of the same sizes, while the
// hypervisors copy the volumes and the memory through the move's sockets,
// forwarded over the peers' TLS. The guest pauses only for the last pass.
// Any failure before the other host runs it leaves it running here.
func (d *Daemon) moveLive(ctx context.Context, c *peerClient, r *launch.Running, spec *config.VM, vmFiles []moveFile, entry []byte, res *apitypes.MoveResult) error {
	vm := spec.Name
	record, pins, err := r.LiveRecord(d.HostName())
	if err != nil {
		return err
	}
	defer r.DropLiveRecord()
	// The volumes are made empty there and mirrored; the rest is sent.
	files := append([]moveFile{{savestate.MovedMeta, record}}, pinFiles(pins)...)
	volumes := map[string]int64{}
	for _, f := range vmFiles {
		name, ok := volumeName(f.name)
		if !ok {
			files = append(files, f)
			continue
		}
		fi, err := os.Stat(f.path)
		if err != nil {
			return err
		}
		volumes[name] = fi.Size()
	}
	if _, err := d.checkRoom(ctx, c, append(slices.Clip(files), vmFiles...)); err != nil {
		return err
	}
	for _, f := range files {
		got, err := d.sendFile(ctx, c, vm, f)
		if err != nil {
			return fmt.Errorf("send %s: %w", f.name, err)
		}
		res.Files = append(res.Files, got)
	}
	var sent streamCounts
	stop, err := d.forwardMove(ctx, c, r, vm, &sent)
	if err != nil {
		return err
	}
	defer stop()

	// The other host starts the VM waiting for it; its answer comes once
	// the guest runs there.
	committed := make(chan error, 1)
	var there apitypes.VMStatus
	go func() {
		body, _ := json.Marshal(apitypes.PeerCommit{From: d.HostName(), Entry: string(entry), Volumes: volumes})
		committed <- c.do(ctx, http.MethodPost, "/peer/v1/incoming/"+url.PathEscape(vm)+"/commit", bytes.NewReader(body), &there)
	}()
	// The hypervisors meet only once the other is ready: a mirror that
	// waited for it would hold this QEMU's main loop, and the guest's
	// devices with it.
	err = c.awaitTarget(vm, committed)
	var stats vmm.LiveStats
	if err == nil {
		stats, err = r.LiveOut(LiveDowntime)
	}
	if err != nil {
		// The guest runs on here; the other host ends what it started.
		d.abortIncoming(c, vm)
		<-committed
		return fmt.Errorf("live migration: %w", err)
	}
	switched := time.Now()
	err = <-committed
	if _, answered := errors.AsType[*peerAnswer](err); err != nil && !answered {
		// Its answer lost, the other host may run it: never two.
		switch runs, qerr := c.runs(vm); {
		case qerr != nil:
			return fmt.Errorf("%w; whether %s runs it is unknown (%v): %w", err, c.name, qerr, errGuestHeld)
		case runs:
			err = nil
		}
	}
	if err != nil {
		// Its memory went over, but it does not run there: it runs here
		// again, on its own volumes (the other host drops its copy).
		d.abortIncoming(c, vm)
		if rerr := r.Resume(); rerr != nil {
			return fmt.Errorf("%w; %w: %v", err, errGuestHeld, rerr)
		}
		return err
	}
	r.MarkMovedAway()
	res.Mode, res.Boot = modeLive, there.Boot
	res.Downtime = (stats.Downtime + time.Since(switched)).Seconds()
	// What went through the streams, as the hypervisors wrote it (the
	// volumes' zeros went as NBD's write-zeroes, not as data).
	res.Files = append(res.Files,
		apitypes.MovedFile{Name: "memory (migrated)", Data: stats.RAMBytes, Wire: sent.migration.Load()},
		apitypes.MovedFile{Name: "volumes (mirrored)", Size: stats.DiskBytes, Wire: sent.nbd.Load()})
	return nil
}

// letIn lets the host whose microvm SSH key is key into the running
// guest of vm, which moves there running.
func (d *Daemon) letIn(vm, key string) error {
	r, err := d.guest(vm)
	if err != nil {
		return err
	}
	return r.LetIn(key)
}

// onlyHere lets only this host (and the VM's own sshKeys) into the guest
// of vm again, after a move that did not happen.
func (d *Daemon) onlyHere(vm string) {
	r, err := d.guest(vm)
	if err == nil {
		err = r.LetOnlyThisHostIn()
	}
	if err != nil {
		d.log.Warn("move: the other host stays let into the guest", "vm", vm, "err", err)
	}
}

// guest is the running guest of vm, as launched here.
func (d *Daemon) guest(vm string) (*launch.Running, error) {
	proc, ok := d.sup.Process(vm)
	if !ok {
		return nil, fmt.Errorf("%s is not running", vm)
	}
	p, ok := proc.(*process)
	if !ok {
		return nil, fmt.Errorf("%s's hypervisor is not one this daemon launched", vm)
	}
	return p.r, nil
}

// volumeName is the volume a moved file is the image of.
func volumeName(file string) (string, bool) {
	name, ok := strings.CutSuffix(file, ".img")
	return name, ok
}

// abortIncoming tells the peer to drop what it has of vm.
func (d *Daemon) abortIncoming(c *peerClient, vm string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c.do(ctx, http.MethodDelete, "/peer/v1/incoming/"+url.PathEscape(vm), nil, nil)
}

// streamCounts are the bytes the source's hypervisor wrote into each
// stream of a live move.
type streamCounts struct{ nbd, migration atomic.Int64 }

// counter counts the bytes written through it.
type counter struct {
	net.Conn
	n *atomic.Int64
}

func (c counter) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// forwardMove listens on the move's sockets of the running guest r, in
// its run directory, and forwards each connection its hypervisor makes to
// the same socket on the peer, counting what it sends into sent; stop
// ends the listening.
func (d *Daemon) forwardMove(ctx context.Context, c *peerClient, r *launch.Running, vm string, sent *streamCounts) (stop func(), err error) {
	nbd, migration := d.env.Layout(vm).MoveSockets()
	var listeners []net.Listener
	stop = func() {
		for _, l := range listeners {
			l.Close()
		}
	}
	for kind, path := range map[string]string{streamNBD: nbd, streamMigration: migration} {
		os.Remove(path)
		l, err := net.Listen("unix", path)
		if err != nil {
			stop()
			return nil, fmt.Errorf("listen for the hypervisor's %s stream: %w", kind, err)
		}
		listeners = append(listeners, l)
		if err := r.OwnSocket(path); err != nil {
			stop()
			return nil, err
		}
		go func() {
			for {
				conn, err := l.Accept()
				if err != nil {
					return
				}
				go func() {
					defer conn.Close()
					t, err := c.tunnel(ctx, vm, kind)
					if err != nil {
						d.log.Error("move: open the stream to the other host", "vm", vm, "stream", kind, "err", err)
						return
					}
					defer t.Close()
					n := &sent.nbd
					if kind == streamMigration {
						n = &sent.migration
					}
					transfer.Splice(counter{conn, n}, t)
				}()
			}
		}()
	}
	return stop, nil
}

// tunnel opens the stream kind of vm's live move on the peer (a
// WebSocket on the peers' TLS).
func (c *peerClient) tunnel(ctx context.Context, vm, kind string) (net.Conn, error) {
	ws, _, err := websocket.Dial(ctx, c.base+"/peer/v1/incoming/"+url.PathEscape(vm)+"/tunnel/"+kind,
		&websocket.DialOptions{HTTPClient: c.http})
	if err != nil {
		return nil, fmt.Errorf("host %s: %w", c.name, err)
	}
	ws.SetReadLimit(-1)
	return websocket.NetConn(ctx, ws, websocket.MessageBinary), nil
}

// WaitsForLiveMove says whether a hypervisor here waits for vm's guest,
// moving here live: its volumes are served (the NBD socket is there).
func (d *Daemon) WaitsForLiveMove(vm string) bool {
	nbd, _ := d.env.Layout(vm).MoveSockets()
	return d.Moving(vm) && fileExists(nbd)
}

// awaitTarget waits until the peer's hypervisor waits for vm's guest, or
// the commit ended (its error is then in committed, put back).
func (c *peerClient) awaitTarget(vm string, committed chan error) error {
	for deadline := time.Now().Add(resumeTimeout + time.Minute); ; time.Sleep(100 * time.Millisecond) {
		select {
		case err := <-committed:
			committed <- err
			if err == nil {
				err = errors.New("it answered before the guest came")
			}
			return fmt.Errorf("host %s did not get ready for the guest: %w", c.name, err)
		default:
		}
		st, err := c.vmState(vm)
		switch {
		case err != nil:
			return err
		case st.Waiting:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("host %s did not get ready for the guest in %s", c.name, resumeTimeout+time.Minute)
		}
	}
}

// DialMove connects to the stream kind (nbd, migration) of vm's live move
// to this host, which the hypervisor waiting for the guest opens (waited
// for a while: it starts as the other host begins).
func (d *Daemon) DialMove(ctx context.Context, vm, kind string) (net.Conn, error) {
	if !d.Moving(vm) {
		return nil, fmt.Errorf("%s is not being moved here", vm)
	}
	nbd, migration := d.env.Layout(vm).MoveSockets()
	path := map[string]string{streamNBD: nbd, streamMigration: migration}[kind]
	if path == "" {
		return nil, fmt.Errorf("a live move has no stream %q", kind)
	}
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
		var dialer net.Dialer
		conn, err := dialer.DialContext(ctx, "unix", path)
		if err == nil {
			return conn, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("the hypervisor waiting for %s does not take its %s stream: %w", vm, kind, err)
		}
	}
}

// makeVolumes makes the empty volumes a live move copies into, in dir.
func makeVolumes(dir string, sizes map[string]int64) error {
	for name, size := range sizes {
		if !movedFileRE.MatchString(name+".img") || size <= 0 {
			return fmt.Errorf("volume %q of %d bytes is not one a move makes", name, size)
		}
		f, err := os.OpenFile(volume.Path(dir, name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		err = f.Truncate(size)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}
