package launch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"microvm.dev/microvm/internal/savestate"
	"microvm.dev/microvm/internal/vmm"
)

// Boot says how a launch brings its guest up.
type Boot struct {
	// Resume is the saved state the guest resumes from (nil: a cold boot).
	Resume *savestate.Meta
	// Dropped says why a saved state was dropped instead of resumed
	// ("" when there was none, or it was resumed).
	Dropped string
	// Template names the template whose saved state a clone started from
	// (Resume is that state, which the clone leaves in place).
	Template string
}

// String says it for status: "resumed from the state saved at …" (on
// another host, for a move), "resumed running from HOST (a live move)",
// "cold boot: the saved state was dropped: …" or "cold boot".
func (b Boot) String() string {
	switch {
	case b.Template != "":
		return "cloned from the template " + b.Template + " saved at " + b.Resume.SavedAt.Format(time.RFC3339)
	case b.Resume != nil && b.Resume.Live:
		return "resumed running from " + b.Resume.Moved.From + " (a live move)"
	case b.Resume != nil && b.Resume.Moved != nil:
		return "resumed from the state saved at " + b.Resume.SavedAt.Format(time.RFC3339) + " on " + b.Resume.Moved.From
	case b.Resume != nil:
		return "resumed from the state saved at " + b.Resume.SavedAt.Format(time.RFC3339)
	case b.Dropped != "":
		return "cold boot: the saved state was dropped: " + b.Dropped
	}
	return "cold boot"
}

// savedDir is the VM's saved-state directory.
func (p *Prepared) savedDir() savestate.Dir { return savestate.Of(p.layout.Dir()) }

// resumeKey is what the guest runs on now, which a saved state must match.
func (p *Prepared) resumeKey() (savestate.Key, error) {
	files := []string{p.Launch.Kernel}
	for _, sh := range p.Launch.Shares {
		if sh.Block != "" {
			files = append(files, sh.Block)
		}
	}
	for _, d := range p.Launch.Disks {
		files = append(files, d.Path)
	}
	if p.Launch.Modules != "" {
		files = append(files, p.Launch.Modules)
	}
	k, err := savestate.NewKey(p.VM.SpecHash(), p.Resolved.Command.Argv, files)
	k.Kernel, k.Pins = p.Launch.Kernel, p.Resolved.Pins
	return k, err
}

// savedState decides whether the guest resumes from a saved state: only
// onto the same spec, command line, kernel, store image and volumes, with
// a backend that can. Any other saved state is dropped (it holds the
// guest's memory) and the VM boots cold, saying why.
func (pr *preparer) savedState(context.Context) error {
	p := pr.p
	if p.VM.From != "" {
		return pr.cloneState()
	}
	dir := p.savedDir()
	m, err := dir.Load()
	if errors.Is(err, savestate.ErrNone) {
		return nil
	}
	why := ""
	switch key, kerr := p.resumeKey(); {
	case err != nil:
		why = err.Error()
	case kerr != nil:
		why = kerr.Error()
	default:
		switch _, ok := p.Backend.(vmm.Saver); {
		case !ok:
			why = p.Backend.Name() + " cannot resume a saved state"
		case m.Live && !canLive(p.Backend):
			why = p.Backend.Name() + " cannot take a running guest"
		case m.Moved != nil:
			why = savestate.MovedMismatch(m, key, savestate.PinsOf(p.layout.Dir()))
		default:
			why = savestate.Mismatch(m.Key, key)
		}
	}
	if why != "" && m.Live {
		// Its volumes are only now being copied here: it must not boot.
		dir.Drop()
		return pr.fail(fmt.Errorf("the live move from %s cannot resume here: %s", m.Moved.From, why))
	}
	if why != "" {
		p.Boot.Dropped = why
		return dir.Drop()
	}
	p.Boot.Resume = &m
	return nil
}

// argv is the hypervisor's command line for this launch: a resume waits
// for the saved state.
func (p *Prepared) argv() []string {
	argv := p.Resolved.Command.Argv
	if p.Boot.Resume != nil {
		argv = append(slices.Clip(argv), p.Backend.(vmm.Saver).IncomingArgs()...)
	}
	return argv
}

// restore loads the saved state into the hypervisor just started and
// drops it (the guest's memory is not left on disk). A state that does
// not load is dropped too, and the VM boots cold in a new hypervisor.
func (s *starter) restore(ctx context.Context) error {
	p := s.p
	if p.Boot.Resume == nil {
		return nil
	}
	dir := p.savedDir()
	if p.Boot.Template != "" {
		return s.restoreClone()
	}
	if p.Boot.Resume.Live {
		// The guest comes over the network, its volumes with it: there is
		// nothing to boot cold instead.
		nbd, migration := p.layout.MoveSockets()
		err := p.Backend.(vmm.LiveMover).LiveIn(p.Launch, nbd, migration)
		dir.Drop()
		if err != nil {
			return s.fail(fmt.Errorf("take the running guest from %s: %w", p.Boot.Resume.Moved.From, err))
		}
		return nil
	}
	f, err := os.Open(dir.StateFile())
	if err == nil {
		err = p.Backend.(vmm.Saver).Restore(p.Launch, f)
		f.Close()
	}
	dir.Drop()
	if err == nil {
		return nil
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	p.Boot = Boot{Dropped: "it did not load: " + err.Error()}
	// A fresh console log: the one kept for the resume holds the saved
	// boot's ready line.
	os.Rename(p.Launch.ConsoleLog, p.Launch.ConsoleLog+".1")
	if err := s.consoleLogFor(p.Resolved.User); err != nil {
		return err
	}
	old := s.cmd
	s.cmd = &exec.Cmd{Path: old.Path, Args: append([]string{old.Path}, p.Resolved.Command.Argv[1:]...),
		Stdout: old.Stdout, Stderr: old.Stderr, ExtraFiles: old.ExtraFiles, SysProcAttr: old.SysProcAttr}
	return s.startHypervisor(ctx)
}

// SaveResult is how a save went.
type SaveResult struct {
	// Bytes is the state file's size, Seconds how long the save took.
	Bytes   int64
	Seconds float64
}

// Save saves the running guest's state to its VM's saved-state directory
// and ends the hypervisor; the next launch resumes it (a clone is not
// saved). The state file is
// the hypervisor's user's alone. A save that fails leaves the guest
// running (the caller then shuts it down cleanly) and no file behind.
func (r *Running) Save() (SaveResult, error) {
	if r.Prepared.VM.From != "" {
		return SaveResult{}, fmt.Errorf("a clone is not saved: it starts again from its template %s", r.Prepared.VM.From)
	}
	return r.saveTo(r.Prepared.savedDir())
}

// saveTo saves the running guest's state in dir and ends the hypervisor.
func (r *Running) saveTo(dir savestate.Dir) (SaveResult, error) {
	p := r.Prepared
	saver, ok := p.Backend.(vmm.Saver)
	if !ok {
		return SaveResult{}, fmt.Errorf("%s cannot save a VM's state", p.Backend.Name())
	}
	// The guest syncs its disks first, so that a saved state that is later
	// dropped loses nothing written before the save.
	if err := r.InGuest("sync", 30*time.Second); err != nil {
		return SaveResult{}, fmt.Errorf("sync the guest's disks before the save: %w", err)
	}
	t0 := time.Now()
	uid, gid := -1, -1
	if u := p.Resolved.User; u != nil {
		uid, gid = int(u.UID), int(u.GID)
	}
	f, err := dir.Create(uid, gid)
	if err != nil {
		return SaveResult{}, err
	}
	err = saver.Save(p.Launch, f)
	if err == nil {
		err = f.Sync()
	}
	f.Close()
	if err != nil {
		dir.Abandon()
		if caps := p.Backend.Capabilities(); !slices.Contains(caps.SaveShares, p.Resolved.Share) {
			err = fmt.Errorf("%w (%s saves a VM only with store: %s; this one's store is %s)", err, p.Backend.Name(), strings.Join(caps.SaveShares, " or "), p.Resolved.Share)
		}
		return SaveResult{}, err
	}
	// The guest is stopped for good: end its hypervisor, then take the
	// identities of its files as it left them.
	r.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.Exited:
	case <-time.After(10 * time.Second):
		r.Process.Kill()
		<-r.Exited
	}
	var m savestate.Meta
	key, err := p.resumeKey()
	if err == nil {
		m, err = dir.Commit(savestate.Meta{SavedAt: time.Now().UTC(), Seconds: time.Since(t0).Seconds(), Key: key, Ready: r.Ready})
	}
	if err != nil {
		dir.Drop()
		return SaveResult{}, fmt.Errorf("%w (the guest was stopped without a clean shutdown; its volumes need a journal replay)", err)
	}
	return SaveResult{Bytes: m.Bytes, Seconds: time.Since(t0).Seconds()}, nil
}

// canLive says whether backend b can take a running guest.
func canLive(b vmm.Backend) bool {
	_, ok := b.(vmm.LiveMover)
	return ok
}
