package savestate

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"microvm.dev/microvm/internal/state"
	"microvm.dev/microvm/internal/vmm"
)

// Moved is what a state saved on another host carries: where it comes
// from and the digest of the kernel it ran (the target boots its own
// kernel file, which must be the same bytes).
type Moved struct {
	From   string `json:"from"`
	Kernel string `json:"kernelSHA256"`
}

// The names a saved state's files are sent under in a move.
const (
	// MovedState is the hypervisor's state file.
	MovedState = "saved.state"
	// MovedMeta is its record, with Moved set.
	MovedMeta = "saved.json"
	// PinPrefix starts the name of a read-only disk the guest ran on.
	PinPrefix = "pin."
)

// Pins are the read-only disks a guest moved with its saved state ran on
// (its store image, its kernel's module tree), kept in the VM's directory:
// the other host's own builds of them are other bytes (mkfs is not
// reproducible), which a resumed guest, whose page cache and file system
// state hold the first ones', must not see. The VM keeps using them until
// it boots cold.
type Pins string

// PinsOf is the pins of the VM whose directory is vmDir.
func PinsOf(vmDir string) Pins { return Pins(filepath.Join(vmDir, "pinned")) }

// Path is where the pin called name is.
func (p Pins) Path(name string) string { return filepath.Join(string(p), name) }

// Use is the pin called name when the VM has it, else fallback.
func (p Pins) Use(name, fallback string) string {
	if _, err := os.Stat(p.Path(name)); err == nil {
		return p.Path(name)
	}
	return fallback
}

// Remove drops the pins (the VM boots cold on this host's own disks).
func (p Pins) Remove() error { return os.RemoveAll(string(p)) }

// ForMove writes the record a move sends with the state (MovedMeta), in
// the saved-state directory, and returns its path: the saved record with
// Moved set, from the host from, and the digest of the kernel it ran.
func (d Dir) ForMove(from string) (string, Meta, error) {
	m, err := d.Load()
	if err != nil {
		return "", m, err
	}
	if m.Key.Kernel == "" {
		return "", m, errors.New("the state was saved by an older microvm, which did not record its kernel")
	}
	return d.writeMoved(from, m)
}

// ForLiveMove writes the record a live move sends (MovedMeta, Live set)
// for a guest running with key and ready as it said, in the saved-state
// directory, and returns its path.
func (d Dir) ForLiveMove(from string, key Key, ready vmm.ReadyResult) (string, error) {
	path, _, err := d.writeMoved(from, Meta{SavedAt: time.Now().UTC(), Key: key, Ready: ready, Live: true})
	return path, err
}

// writeMoved writes m, from the host from with the digest of its kernel,
// as the record a move sends.
func (d Dir) writeMoved(from string, m Meta) (string, Meta, error) {
	sum, err := FileSHA256(m.Key.Kernel)
	if err != nil {
		return "", m, fmt.Errorf("saved state: %w", err)
	}
	m.Moved = &Moved{From: from, Kernel: sum}
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return "", m, fmt.Errorf("saved state: %w", err)
	}
	path := filepath.Join(string(d), MovedMeta)
	if err := state.WriteJSON(path, m); err != nil {
		return "", m, fmt.Errorf("saved state: %w", err)
	}
	return path, m, nil
}

// InstallMoved puts the saved-state files a move brought into vmDir in
// their places: the state (none for a live move) and its record in the
// saved-state directory (the record last), the pins beside it; it says
// whether there was a state to resume. A cold move brought none of them,
// and nothing is done.
func InstallMoved(vmDir string) (bool, error) {
	if _, err := os.Stat(filepath.Join(vmDir, MovedMeta)); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return true, installMoved(vmDir)
}

func installMoved(vmDir string) error {
	stateFile := filepath.Join(vmDir, MovedState)
	entries, err := os.ReadDir(vmDir)
	if err != nil {
		return err
	}
	pins := PinsOf(vmDir)
	for _, e := range entries {
		name, ok := strings.CutPrefix(e.Name(), PinPrefix)
		if !ok {
			continue
		}
		if err := os.MkdirAll(string(pins), 0o755); err != nil {
			return err
		}
		// Read by the VM's own hypervisor user.
		if err := os.Chmod(filepath.Join(vmDir, e.Name()), 0o644); err != nil {
			return err
		}
		if err := os.Rename(filepath.Join(vmDir, e.Name()), pins.Path(name)); err != nil {
			return fmt.Errorf("pin %s: %w", name, err)
		}
	}
	d := Of(vmDir)
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return err
	}
	if err := os.Rename(stateFile, d.StateFile()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("saved state: %w", err)
	}
	if err := os.Rename(filepath.Join(vmDir, MovedMeta), d.meta()); err != nil {
		return fmt.Errorf("saved state: %w", err)
	}
	return nil
}

// MovedMismatch says why a state saved on another host (saved.Moved set)
// cannot resume as now ("" when it can): the spec must be the same, the
// kernel the same bytes, and every read-only disk the guest ran on the
// one that came with it (a pin), not this host's own build.
func MovedMismatch(saved Meta, now Key, pins Pins) string {
	from := saved.Moved.From
	if saved.Key.SpecHash != now.SpecHash {
		return "the VM's spec here differs from the one saved on " + from
	}
	sum, err := FileSHA256(now.Kernel)
	if err != nil {
		return err.Error()
	}
	if sum != saved.Moved.Kernel {
		return fmt.Sprintf("the kernel here (%s) is not the one it was saved with on %s", filepath.Base(now.Kernel), from)
	}
	for name := range saved.Key.Pins {
		if now.Pins[name] != pins.Path(name) {
			return fmt.Sprintf("its disk %s did not come with it from %s", name, from)
		}
	}
	return ""
}

// FileSHA256 is the hex SHA-256 of a file's content.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
