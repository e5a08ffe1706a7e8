package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Moved records a VM of this host's file that was moved to another host
// (microvm move, drain): the file still names it here, but this host no
// longer runs it or holds its data, so its applies leave it out until the
// file names the other host or the VM is moved back.
type Moved struct {
	To   string    `json:"to"`
	Time time.Time `json:"time"`
}

// MovedDir holds one record per VM moved away.
func (d Dir) MovedDir() string { return filepath.Join(d.Root, "moved") }

// WriteMoved records that the VM name was moved to the host to.
func (d Dir) WriteMoved(name, to string, now time.Time) error {
	if err := os.MkdirAll(d.MovedDir(), 0o700); err != nil {
		return fmt.Errorf("record %s moved: %w", name, err)
	}
	data, err := json.Marshal(Moved{To: to, Time: now.UTC()})
	if err != nil {
		return err
	}
	return WriteFile(filepath.Join(d.MovedDir(), name+".json"), data, 0o600)
}

// RemoveMoved forgets that the VM name was moved away.
func (d Dir) RemoveMoved(name string) error {
	if err := os.Remove(filepath.Join(d.MovedDir(), name+".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("forget %s moved: %w", name, err)
	}
	return nil
}

// MovedVMs reads the records of the VMs moved away, by name.
func (d Dir) MovedVMs() (map[string]Moved, error) {
	out := map[string]Moved{}
	entries, err := os.ReadDir(d.MovedDir())
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("the VMs moved away: %w", err)
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		data, err := os.ReadFile(filepath.Join(d.MovedDir(), e.Name()))
		if err != nil {
			return nil, err
		}
		var m Moved
		if err := json.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("the record of %s moved: %w", name, err)
		}
		out[name] = m
	}
	return out, nil
}

// IncomingDir holds what peers are sending this host (a VM's files while
// they arrive): nothing in it outlives a daemon's restart.
func (d Dir) IncomingDir() string { return filepath.Join(d.Root, "incoming") }

// FailedMovesDir keeps the console and hypervisor logs of VMs that moved
// here and did not come up, for a week: the VM's own directory is gone
// (its sender kept it).
func (d Dir) FailedMovesDir() string { return filepath.Join(d.Root, "failed-moves") }

// PinCacheDir keeps the read-only disks moved VMs ran on, by digest
// (pincache), so that a later move of the same bytes links them.
func (d Dir) PinCacheDir() string { return filepath.Join(d.Root, "pincache") }

// arrivedPath records that the VM name came here by a move from a host
// whose file named it: once this host's file names it too, the file
// takes it over from the API.
func (d Dir) arrivedPath(name string) string {
	return filepath.Join(d.MovedDir(), name+".arrived")
}

// WriteArrived records that the VM name arrived by a move.
func (d Dir) WriteArrived(name string) error {
	if err := os.MkdirAll(d.MovedDir(), 0o700); err != nil {
		return err
	}
	return WriteFile(d.arrivedPath(name), nil, 0o600)
}

// Arrived says whether the VM name arrived by a move and is still held
// as put through the API.
func (d Dir) Arrived(name string) bool {
	_, err := os.Stat(d.arrivedPath(name))
	return err == nil
}

// RemoveArrived forgets that the VM name arrived by a move.
func (d Dir) RemoveArrived(name string) error {
	if err := os.Remove(d.arrivedPath(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
