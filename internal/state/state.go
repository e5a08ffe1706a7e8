// Package state keeps microvm's durable state on disk: the layout of the
// state directory, atomic and durable file writes (temp file, fsync, rename,
// directory fsync), and the per-VM run records that say what was started.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"microvm.dev/microvm/internal/config"
)

// DefaultDir is the state directory used when none is given.
const DefaultDir = "/var/lib/microvm"

// Dir is a state directory.
type Dir struct {
	// Root is the directory's path.
	Root string
}

// VMDir is the directory of one VM's files (volumes, console log, run record).
func (d Dir) VMDir(name string) string { return filepath.Join(d.Root, "vms", name) }

// RunRecordPath is the run record of a VM.
func (d Dir) RunRecordPath(name string) string { return filepath.Join(d.VMDir(name), "run.json") }

// RunRecord says what was started for a VM: the spec it was started with and
// the process running it.
type RunRecord struct {
	// Name of the VM.
	Name string `json:"name"`
	// SpecHash is config.VM.SpecHash of Spec.
	SpecHash string `json:"specHash"`
	// Spec is the resolved VM the process was started with.
	Spec config.VM `json:"spec"`
	// PID of the hypervisor process (0 when not running).
	PID int `json:"pid,omitempty"`
	// ProcStart is the process's start time in clock ticks since boot, so a
	// reused pid is not mistaken for the hypervisor.
	ProcStart uint64 `json:"procStart,omitempty"`
	// StartedAt is when the process was started.
	StartedAt time.Time `json:"startedAt,omitzero"`
	// BootSeconds is how long the guest took to become ready (0 until it
	// was), kept so a daemon that adopts the VM still knows it.
	BootSeconds float64 `json:"bootSeconds,omitempty"`
	// Saved says the VM was stopped by saving its state (stop --save):
	// its next start resumes it.
	Saved bool `json:"saved,omitempty"`
	// Image is where the image the VM booted came from: for a registry
	// image its repository and manifest digest (repo@sha256:…), which a
	// deploy generation records and a rollback returns to.
	Image string `json:"image,omitempty"`
}

// WriteRunRecord stores a VM's run record atomically.
func (d Dir) WriteRunRecord(rec RunRecord) error {
	if rec.SpecHash == "" {
		rec.SpecHash = rec.Spec.SpecHash()
	}
	return WriteJSON(d.RunRecordPath(rec.Name), rec)
}

// RunRecords reads every VM's run record, sorted by name. A missing state
// directory means no records. A record that cannot be read is an error naming
// its file: state is never invented.
func (d Dir) RunRecords() ([]RunRecord, error) {
	entries, err := os.ReadDir(filepath.Join(d.Root, "vms"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	var recs []RunRecord
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		var rec RunRecord
		err := ReadJSON(d.RunRecordPath(e.Name()), &rec)
		if errors.Is(err, fs.ErrNotExist) {
			continue // a VM directory holding only volumes
		}
		if err != nil {
			return nil, err
		}
		if rec.Name != e.Name() {
			return nil, fmt.Errorf("state: %s names VM %q, not %q", d.RunRecordPath(e.Name()), rec.Name, e.Name())
		}
		recs = append(recs, rec)
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].Name < recs[j].Name })
	return recs, nil
}

// ReadJSON decodes the JSON file at path into v, with the path in any error.
func ReadJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("state: %s is corrupt: %w", path, err)
	}
	return nil
}

// WriteJSON stores v as indented JSON at path with WriteFile.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("state: encode %s: %w", path, err)
	}
	return WriteFile(path, append(b, '\n'), 0o644)
}

// WriteFileFunc is WriteFile for content produced by fill, streamed to the
// temp file instead of held in memory.
func WriteFileFunc(path string, perm os.FileMode, fill func(w io.Writer) error) error {
	return writeAtomic(path, perm, fill)
}

// WriteFile replaces path with data so that a reader (or a crash) sees either
// the old or the new content, never a mix: it writes a temp file in the same
// directory, fsyncs it, renames it over path and fsyncs the directory.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return writeAtomic(path, perm, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

func writeAtomic(path string, perm os.FileMode, fill func(w io.Writer) error) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	cleanup := func() { tmp.Close(); os.Remove(tmp.Name()) }
	if err := fill(tmp); err != nil {
		cleanup()
		return fmt.Errorf("state: write %s: %w", path, err)
	}
	if err := tmp.Chmod(perm); err != nil {
		cleanup()
		return fmt.Errorf("state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		cleanup()
		return fmt.Errorf("state: sync %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("state: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("state: sync directory %s: %w", dir, err)
	}
	return nil
}
