// Package snapshot keeps point-in-time copies of a VM's data volumes in
// <vm dir>/snapshots/<volume>@<UTC time>.img: a reflink (FICLONE) where
// the filesystem shares blocks (btrfs, XFS), else a sparse copy (holes stay
// holes). Restoring copies a snapshot back over the volume, after keeping
// the volume as it was as a snapshot of its own; nothing is ever lost by a
// restore or by pruning beyond the retention count.
package snapshot

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"microvm.dev/microvm/internal/apitypes"

	"golang.org/x/sys/unix"
)

// Snapshot is one copy of a volume.
type Snapshot = apitypes.Snapshot

const timeFormat = "20060102T150405.000Z"

// Dir is where the snapshots of the VM whose directory is vmDir live.
func Dir(vmDir string) string { return filepath.Join(vmDir, "snapshots") }

// Take copies the volume image src (named volume) into dir and returns the
// snapshot. The caller makes the image consistent first (guest paused).
func Take(dir, volume, src string, now time.Time) (Snapshot, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Snapshot{}, err
	}
	s := Snapshot{Volume: volume, Time: now.UTC()}
	s.Name = volume + "@" + s.Time.Format(timeFormat)
	dst := filepath.Join(dir, s.Name+".img")
	method, err := copyImage(src, dst)
	if err != nil {
		return Snapshot{}, fmt.Errorf("snapshot of volume %s: %w", volume, err)
	}
	fi, _ := os.Stat(dst)
	s.Size, s.Method = fi.Size(), method
	return s, nil
}

// List returns the snapshots in dir, oldest first.
func List(dir string) ([]Snapshot, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Snapshot
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".img")
		if !ok || strings.HasPrefix(name, ".") {
			continue
		}
		vol, ts, ok := strings.Cut(name, "@")
		t, err := time.Parse(timeFormat, ts)
		if !ok || err != nil {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		out = append(out, Snapshot{Name: name, Volume: vol, Time: t, Size: fi.Size()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out, nil
}

// Restore copies snapshot name back over the volume image dst (the VM is
// stopped). The volume as it was is kept first as a snapshot of its own,
// which is returned; a volume not made yet (a VM restored on a host that
// never ran it) has none, and the zero Snapshot is returned.
func Restore(dir, name, dst string, now time.Time) (Snapshot, error) {
	if strings.ContainsAny(name, "/\x00") || strings.HasPrefix(name, ".") {
		return Snapshot{}, fmt.Errorf("%q is not a snapshot name", name)
	}
	src := filepath.Join(dir, name+".img")
	if _, err := os.Stat(src); err != nil {
		return Snapshot{}, fmt.Errorf("no snapshot %q: %w", name, err)
	}
	vol, _, _ := strings.Cut(name, "@")
	var before Snapshot
	switch _, err := os.Stat(dst); {
	case err == nil:
		if before, err = Take(dir, vol, dst, now); err != nil {
			return Snapshot{}, fmt.Errorf("keep the volume before restoring: %w", err)
		}
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return Snapshot{}, err
		}
	default:
		return Snapshot{}, err
	}
	tmp := dst + ".restoring"
	if _, err := copyImage(src, tmp); err != nil {
		os.Remove(tmp)
		return Snapshot{}, err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return Snapshot{}, err
	}
	return before, nil
}

// Prune deletes the oldest snapshots of each volume beyond keep, and
// returns their names.
func Prune(dir string, keep int) ([]string, error) {
	if keep <= 0 {
		return nil, nil
	}
	all, err := List(dir)
	if err != nil {
		return nil, err
	}
	byVol := map[string][]Snapshot{}
	for _, s := range all {
		byVol[s.Volume] = append(byVol[s.Volume], s)
	}
	var removed []string
	for _, list := range byVol {
		for len(list) > keep {
			if err := os.Remove(filepath.Join(dir, list[0].Name+".img")); err != nil {
				return removed, err
			}
			removed = append(removed, list[0].Name)
			list = list[1:]
		}
	}
	sort.Strings(removed)
	return removed, nil
}

// copyImage copies src to dst (mode 0600, written then synced): a reflink
// when the filesystem can, else a sparse copy.
func copyImage(src, dst string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return "", err
	}
	method := "reflink"
	if err := unix.IoctlFileClone(int(out.Fd()), int(in.Fd())); err != nil {
		method = "sparse copy"
		if err := sparseCopy(out, in); err != nil {
			out.Close()
			os.Remove(dst)
			return "", err
		}
	}
	if err := out.Sync(); err != nil {
		out.Close()
		os.Remove(dst)
		return "", err
	}
	if err := out.Close(); err != nil {
		os.Remove(dst)
		return "", err
	}
	return method, nil
}

// sparseCopy copies the data extents of in (SEEK_DATA/SEEK_HOLE) and sets
// the size, so holes stay holes.
func sparseCopy(out, in *os.File) error {
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	var off int64
	for off < size {
		data, err := unix.Seek(int(in.Fd()), off, unix.SEEK_DATA)
		if err != nil {
			if errors.Is(err, unix.ENXIO) {
				break // only a hole is left
			}
			return err
		}
		hole, err := unix.Seek(int(in.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		if _, err := in.Seek(data, io.SeekStart); err != nil {
			return err
		}
		if _, err := out.Seek(data, io.SeekStart); err != nil {
			return err
		}
		if _, err := io.CopyN(out, in, hole-data); err != nil {
			return err
		}
		off = hole
	}
	return out.Truncate(size)
}
