// Package savestate keeps a VM's saved state on disk: the hypervisor's
// state file (the guest's memory and devices, secrets included, so it is
// the hypervisor user's alone) and a record of what the guest was saved
// from (its spec hash, the hypervisor's command line, and the identity of
// every file it ran on: kernel, store image, volumes). A saved VM is
// resumed only onto exactly that; anything else drops the state with the
// reason, and the VM boots cold.
package savestate

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"microvm.dev/microvm/internal/state"
	"microvm.dev/microvm/internal/vmm"
)

// FileID identifies a file's content without reading it: a file written
// since (or replaced) has another.
type FileID struct {
	Size    int64     `json:"size"`
	ModTime time.Time `json:"modTime"`
	Inode   uint64    `json:"inode"`
}

// Identify returns path's FileID.
func Identify(path string) (FileID, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return FileID{}, err
	}
	id := FileID{Size: fi.Size(), ModTime: fi.ModTime().UTC()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.Inode = st.Ino
	}
	return id, nil
}

// Key is what a saved guest may only be resumed onto.
type Key struct {
	// SpecHash is the VM's config.VM.SpecHash.
	SpecHash string `json:"specHash"`
	// Argv is the hypervisor's command line (kernel, store image, memory,
	// devices), without the arguments that make it wait for the state.
	Argv []string `json:"argv"`
	// Files are the identities of the files the guest ran on, by path.
	Files map[string]FileID `json:"files"`
	// Kernel is the kernel's path, and Pins the read-only disks the guest
	// ran on (its store image, its kernel's module tree) by the name a
	// move keeps them under (see Pins): what a move takes along or checks.
	Kernel string            `json:"kernel,omitempty"`
	Pins   map[string]string `json:"pins,omitempty"`
}

// NewKey makes the key of a guest with spec hash and command line argv
// that runs on files.
func NewKey(specHash string, argv, files []string) (Key, error) {
	k := Key{SpecHash: specHash, Argv: argv, Files: map[string]FileID{}}
	for _, f := range files {
		id, err := Identify(f)
		if err != nil {
			return Key{}, fmt.Errorf("saved state: %w", err)
		}
		k.Files[f] = id
	}
	return k, nil
}

// Mismatch says why a guest saved with key saved cannot resume as now
// ("" when it can).
func Mismatch(saved, now Key) string {
	if saved.SpecHash != now.SpecHash {
		return "the VM's spec changed since the save"
	}
	if !slices.Equal(saved.Argv, now.Argv) {
		return "the hypervisor's command line changed since the save (kernel, image, memory or devices)"
	}
	var changed []string
	for path, id := range saved.Files {
		if cur, ok := now.Files[path]; !ok || cur != id {
			changed = append(changed, filepath.Base(path))
		}
	}
	for path := range now.Files {
		if _, ok := saved.Files[path]; !ok {
			changed = append(changed, filepath.Base(path))
		}
	}
	if len(changed) > 0 {
		sort.Strings(changed)
		return "changed since the save: " + strings.Join(changed, ", ")
	}
	return ""
}

// Meta is the record of one saved guest.
type Meta struct {
	// SavedAt is when the save completed.
	SavedAt time.Time `json:"savedAt"`
	// Seconds is how long the save took.
	Seconds float64 `json:"seconds"`
	// Bytes is the state file's size.
	Bytes int64 `json:"bytes"`
	// Key is what it may be resumed onto.
	Key Key `json:"key"`
	// Ready is what the guest reported when it became ready.
	Ready vmm.ReadyResult `json:"ready"`
	// Moved is set on a state saved on another host and moved here.
	Moved *Moved `json:"moved,omitempty"`
	// Live says the state comes over the network while the guest runs
	// there (a live move): there is no state file.
	Live bool `json:"live,omitempty"`
}

// Dir is the saved state of one VM: a directory in the VM's directory.
type Dir string

// Of is the saved-state directory of the VM whose directory is vmDir.
func Of(vmDir string) Dir { return Dir(filepath.Join(vmDir, "saved")) }

// StateFile is the hypervisor's state file.
func (d Dir) StateFile() string { return filepath.Join(string(d), "state") }

// partial is the state file while it is being written.
func (d Dir) partial() string { return d.StateFile() + ".partial" }

func (d Dir) meta() string { return filepath.Join(string(d), "meta.json") }

// Create makes a new, empty partial state file (mode 0600, owned by uid
// and gid when they are not -1), replacing any earlier one.
func (d Dir) Create(uid, gid int) (*os.File, error) {
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return nil, fmt.Errorf("saved state: %w", err)
	}
	os.Remove(d.partial())
	f, err := os.OpenFile(d.partial(), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("saved state: %w", err)
	}
	if uid != -1 {
		if err := f.Chown(uid, gid); err != nil {
			f.Close()
			os.Remove(d.partial())
			return nil, fmt.Errorf("saved state: %w", err)
		}
	}
	return f, nil
}

// Abandon removes a partial state file (a save that failed).
func (d Dir) Abandon() { os.Remove(d.partial()) }

// Commit makes the partial state file the saved state, recorded by m
// (returned with the file's size). The record is written last: a state
// file without one is never resumed.
func (d Dir) Commit(m Meta) (Meta, error) {
	fi, err := os.Stat(d.partial())
	if err != nil {
		return m, fmt.Errorf("saved state: %w", err)
	}
	m.Bytes = fi.Size()
	os.Remove(d.meta())
	if err := os.Rename(d.partial(), d.StateFile()); err != nil {
		return m, fmt.Errorf("saved state: %w", err)
	}
	if err := state.WriteJSON(d.meta(), m); err != nil {
		return m, fmt.Errorf("saved state: %w", err)
	}
	return m, nil
}

// ErrNone says the VM has no saved state.
var ErrNone = errors.New("no saved state")

// Load reads the record of the saved state (ErrNone when there is none,
// or only an incomplete one).
func (d Dir) Load() (Meta, error) {
	var m Meta
	b, err := os.ReadFile(d.meta())
	if errors.Is(err, os.ErrNotExist) {
		return m, ErrNone
	}
	if err != nil {
		return m, fmt.Errorf("saved state: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("saved state %s: %w", d.meta(), err)
	}
	if _, err := os.Stat(d.StateFile()); err != nil && !m.Live {
		return m, ErrNone
	}
	return m, nil
}

// Drop removes the saved state (after a resume, or when it can no longer
// be resumed): the guest's memory is not left on disk.
func (d Dir) Drop() error {
	var errs []error
	for _, p := range []string{d.meta(), d.StateFile(), d.partial(), filepath.Join(string(d), MovedMeta)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	os.Remove(string(d))
	return errors.Join(errs...)
}
