package launch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/savestate"
	"microvm.dev/microvm/internal/state"
	"microvm.dev/microvm/internal/vmm"
)

// Where a template's saved state is kept, in its VM's directory: the
// current one (what clones start from) and the one being made.
const (
	templateDirName = "template"
	newTemplateName = "template.new"
	templateRecord  = "template.json"
)

// TemplateDir is where the template name's saved state is kept: the
// hypervisor's state file and record (a savestate.Dir), the guest's
// memory file (which clones map copy-on-write) and its identity disk.
func TemplateDir(env Env, name string) string {
	return filepath.Join(env.Layout(name).Dir(), templateDirName)
}

// hypervisorUser is whose hypervisor identity vm runs with: a clone's is
// its template's, whose memory file it maps.
func hypervisorUser(vm *config.VM) string {
	if vm.From != "" {
		return vm.From
	}
	return vm.Name
}

// templateMemory is the memory file and identity disk of vm when it is a
// template (the state being made) or a clone (its template's memory, its
// own identity disk in its run directory); nil for any other VM.
func templateMemory(env Env, vm *config.VM, lay vmm.Layout) *vmm.TemplateMemory {
	switch {
	case vm.Template:
		d := filepath.Join(lay.Dir(), newTemplateName)
		return &vmm.TemplateMemory{Path: filepath.Join(d, "memory"), Identity: filepath.Join(d, "identity")}
	case vm.From != "":
		return &vmm.TemplateMemory{Path: filepath.Join(TemplateDir(env, vm.From), "memory"), Identity: filepath.Join(lay.Run(), "identity"), Clone: true}
	}
	return nil
}

// TemplateRecord says what a template's saved state is, so a damaged or
// stale one is never handed to a clone.
type TemplateRecord struct {
	// SpecHash is the template's spec when it was saved.
	SpecHash string `json:"specHash"`
	// Init names the initramfs base the template booted (microvm-init's
	// and the modules' content hash): the guest code its clones resume.
	Init string `json:"init"`
	// SavedAt is when.
	SavedAt time.Time `json:"savedAt"`
	// Memory and State are the memory and state files as they were left.
	Memory savestate.FileID `json:"memory"`
	State  savestate.FileID `json:"state"`
	// BootSeconds and SaveSeconds are how long the template's cold boot
	// (to ready and its health check) and its save took.
	BootSeconds float64 `json:"bootSeconds"`
	SaveSeconds float64 `json:"saveSeconds"`
}

// ErrTemplateStale says a template's saved state cannot start a clone
// now: there is none, it was made from another spec or on other files, or
// it is damaged. It is made again by a cold boot of the template.
var ErrTemplateStale = errors.New("the template's saved state cannot be used")

// ErrTemplateChanged is ErrTemplateStale for a template whose spec changed
// since its state was saved.
var ErrTemplateChanged = fmt.Errorf("%w: its spec changed since it was saved", ErrTemplateStale)

// TemplateState is the saved state clones of the template vm start from,
// or why there is none they may use (ErrTemplateStale).
func TemplateState(env Env, vm *config.VM) (TemplateRecord, savestate.Meta, error) {
	rec, m, err := loadTemplate(env, vm.Name)
	if err == nil && rec.SpecHash != vm.SpecHash() {
		err = ErrTemplateChanged
	}
	return rec, m, err
}

// loadTemplate is the template name's saved state, when its files are as
// they were left.
func loadTemplate(env Env, name string) (TemplateRecord, savestate.Meta, error) {
	dir := TemplateDir(env, name)
	var rec TemplateRecord
	if err := state.ReadJSON(filepath.Join(dir, templateRecord), &rec); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return rec, savestate.Meta{}, fmt.Errorf("%w: none was made yet", ErrTemplateStale)
		}
		return rec, savestate.Meta{}, fmt.Errorf("%w: its record is damaged: %v", ErrTemplateStale, err)
	}
	mem, err := savestate.Identify(filepath.Join(dir, "memory"))
	if err != nil || mem != rec.Memory {
		return rec, savestate.Meta{}, fmt.Errorf("%w: its memory file changed since it was saved (damaged)", ErrTemplateStale)
	}
	sd := savestate.Dir(dir)
	st, err := savestate.Identify(sd.StateFile())
	if err != nil || st != rec.State {
		return rec, savestate.Meta{}, fmt.Errorf("%w: its state file changed since it was saved (damaged)", ErrTemplateStale)
	}
	m, err := sd.Load()
	if err != nil {
		return rec, m, fmt.Errorf("%w: %v", ErrTemplateStale, err)
	}
	return rec, m, nil
}

// DropTemplate removes the template name's saved state (clones running
// from it keep their mapping of its memory).
func DropTemplate(env Env, name string) error {
	return os.RemoveAll(TemplateDir(env, name))
}

// MakeTemplate makes the saved state the clones of vm start from: vm
// boots cold, becomes ready (its healthCheck passing: its workload is
// warm), its workload is frozen and it is saved with its memory left in
// its file; the state replaces the one before (clones started from that
// one keep running on its memory, which is removed once they exit).
// timeout bounds the boot.
func MakeTemplate(ctx context.Context, env Env, vm *config.VM, timeout time.Duration) (TemplateRecord, error) {
	t0 := time.Now()
	lay := env.Layout(vm.Name)
	work := filepath.Join(lay.Dir(), newTemplateName)
	os.RemoveAll(work)
	p, err := Prepare(ctx, env, vm, nil)
	if err != nil {
		return TemplateRecord{}, err
	}
	r, err := Start(ctx, p)
	if err != nil {
		os.RemoveAll(work)
		return TemplateRecord{}, err
	}
	fail := func(err error) (TemplateRecord, error) {
		r.Stop(10 * time.Second)
		os.RemoveAll(work)
		return TemplateRecord{}, fmt.Errorf("vms.%s: template: %w", vm.Name, err)
	}
	if _, err := r.AwaitReady(timeout, nil); err != nil {
		return fail(err)
	}
	boot := time.Since(t0).Seconds()
	if err := r.InGuest("/run/microvm/init template "+vmm.IdentitySerial, 30*time.Second); err != nil {
		return fail(fmt.Errorf("freeze its workload: %w", err))
	}
	res, err := r.saveTo(savestate.Dir(work))
	if err != nil {
		return fail(err)
	}
	rec := TemplateRecord{SpecHash: vm.SpecHash(), Init: p.initBase, SavedAt: time.Now().UTC(), BootSeconds: boot, SaveSeconds: res.Seconds}
	if rec.Memory, err = savestate.Identify(filepath.Join(work, "memory")); err == nil {
		rec.State, err = savestate.Identify(savestate.Dir(work).StateFile())
	}
	if err == nil {
		err = state.WriteJSON(filepath.Join(work, templateRecord), rec)
	}
	if err != nil {
		os.RemoveAll(work)
		return TemplateRecord{}, fmt.Errorf("vms.%s: template: %w", vm.Name, err)
	}
	// Unlinked, the old memory stays mapped by the clones that run on it.
	dir := TemplateDir(env, vm.Name)
	if err := os.RemoveAll(dir); err != nil {
		return TemplateRecord{}, fmt.Errorf("vms.%s: template: %w", vm.Name, err)
	}
	if err := os.Rename(work, dir); err != nil {
		return TemplateRecord{}, fmt.Errorf("vms.%s: template: %w", vm.Name, err)
	}
	return rec, nil
}

// templateFiles makes a template's memory file (its size the guest's
// memory) and identity disk, owned by its hypervisor's user.
func (pr *preparer) templateFiles(context.Context) error {
	p := pr.p
	t := p.Launch.Template
	if t == nil {
		return nil
	}
	u := p.Resolved.User
	id := guest.Identity{Generation: newGeneration()}
	if t.Clone {
		id = pr.cloneIdentity(id.Generation)
		p.identity = &id
	} else {
		if err := os.MkdirAll(filepath.Dir(t.Path), 0o700); err != nil {
			return pr.fail(err)
		}
		f, err := os.OpenFile(t.Path, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o600)
		if err == nil {
			err = f.Truncate(int64(p.VM.Memory))
			f.Close()
		}
		if err != nil {
			return pr.fail(fmt.Errorf("template memory: %w", err))
		}
		if u != nil {
			if err := u.Own(filepath.Dir(t.Path), t.Path); err != nil {
				return pr.fail(err)
			}
		}
	}
	b, err := guest.EncodeIdentity(id)
	if err != nil && len(id.Secrets) > 0 {
		err = fmt.Errorf("vms.%s.secrets: a clone's secrets go on its identity disk (%d KiB with its keys and network): %w", p.VM.Name, guest.IdentityDiskSize>>10, err)
	}
	if err != nil {
		return pr.fail(err)
	}
	if err := state.WriteFile(t.Identity, b, 0o600); err != nil {
		return pr.fail(err)
	}
	if u != nil {
		return u.Own(t.Identity)
	}
	return nil
}

// cloneIdentity is who the clone is, for its identity disk.
func (pr *preparer) cloneIdentity(generation string) guest.Identity {
	p := pr.p
	spec := guestSpec(p.env, p.VM, p.Resolved, p.Volumes, pr.hostPEM, pr.authorized, nil)
	seed := make([]byte, 64)
	rand.Read(seed)
	return guest.Identity{Generation: generation, Name: p.VM.Name, Net: spec.Net, HostKey: string(pr.hostPEM),
		AuthorizedKeys: pr.authorized, MachineID: spec.MachineID, Seed: seed, Secrets: pr.secrets}
}

// rewriteIdentity writes id over the identity disk at path, in place.
func rewriteIdentity(path string, id guest.Identity) error {
	b, err := guest.EncodeIdentity(id)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(b, 0)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func newGeneration() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// cloneState is the clone's savedState: its template's state, when its
// files are as saved and it ran on the kernel, module tree, store image
// and microvm-init the clone runs on (an older microvm-init, frozen in the
// template's memory, would not know what a newer host writes on the
// identity disk). A clone never boots cold: without a usable state it
// fails with ErrTemplateStale (the daemon then makes the template's state
// again and starts the clone once more).
func (pr *preparer) cloneState() error {
	p := pr.p
	rec, m, err := loadTemplate(p.env, p.VM.From)
	if err != nil {
		return pr.fail(fmt.Errorf("from: %s: %w", p.VM.From, err))
	}
	if rec.Init != p.initBase {
		return pr.fail(fmt.Errorf("from: %s: %w: it runs another microvm-init than the clone's (microvm was updated since it was saved)", p.VM.From, ErrTemplateStale))
	}
	key, err := p.resumeKey()
	if err != nil {
		return pr.fail(err)
	}
	for path, id := range key.Files {
		if saved, ok := m.Key.Files[path]; !ok || saved != id {
			return pr.fail(fmt.Errorf("from: %s: %w: it ran on another %s than the clone's", p.VM.From, ErrTemplateStale, filepath.Base(path)))
		}
	}
	p.Boot.Resume, p.Boot.Template = &m, p.VM.From
	return nil
}

// restoreClone loads the template's state into the clone's hypervisor
// just started; the state stays for the next clone. A state that does not
// load is damaged: it is dropped (the template's next clone makes it again
// by a cold boot) and the clone fails.
func (s *starter) restoreClone() error {
	p := s.p
	dir := savestate.Dir(TemplateDir(p.env, p.Boot.Template))
	// The clock the guest sets as it resumes: now, not when the launch
	// was prepared. Written in place: QEMU has the disk open.
	p.identity.ClockNS = time.Now().UnixNano()
	err := rewriteIdentity(p.Launch.Template.Identity, *p.identity)
	var f *os.File
	if err == nil {
		f, err = os.Open(dir.StateFile())
	}
	if err == nil {
		err = p.Backend.(vmm.Saver).Restore(p.Launch, f)
		f.Close()
	}
	if err == nil {
		return nil
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	DropTemplate(p.env, p.Boot.Template)
	return s.fail(fmt.Errorf("from: %s: %w: it did not load (dropped; made again at the next start): %v", p.Boot.Template, ErrTemplateStale, err))
}
