// Package volume manages VMs' persistent data volumes: sparse ext4 images
// created and formatted on first use (atomically: a half-made image is never
// visible), grown when the configured size grows, never shrunk and never
// deleted by a config change.
package volume

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"microvm.dev/microvm/internal/config"
)

// Action says what Ensure did.
type Action string

// Actions of Ensure.
const (
	Kept    Action = "kept"
	Created Action = "created"
	Grown   Action = "grown"
)

// Path is the image file of volume name in dir.
func Path(dir, name string) string { return filepath.Join(dir, name+".img") }

// ErrShrink is returned when the config asks for a smaller volume.
var ErrShrink = errors.New("volumes are never shrunk")

// minFree is the space formatting may need beyond the sparse file itself:
// ext4 metadata written up front, with lazy table and journal init.
func minFree(size config.Size) int64 { return int64(size)/256 + 64<<20 }

// Ensure makes the volume exist at its configured size: created and
// formatted (ext4, label = name) if missing, grown if smaller. Shrinking is
// refused with ErrShrink; nothing is ever deleted.
func Ensure(dir string, v config.Volume) (Action, error) {
	path := Path(dir, v.Name)
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return Created, create(dir, path, v)
	case err != nil:
		return "", fmt.Errorf("volume %s: %w", v.Name, err)
	case fi.Size() == int64(v.Size):
		return Kept, nil
	case fi.Size() > int64(v.Size):
		return "", fmt.Errorf("volume %s is %s on disk but the config says %s: %w; restore the size or move the data",
			v.Name, config.Size(fi.Size()), v.Size, ErrShrink)
	default:
		return Grown, grow(path, v)
	}
}

func checkSpace(dir string, need int64, what string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("%s: free space of %s: %w", what, dir, err)
	}
	if free := int64(st.Bavail) * int64(st.Bsize); free < need {
		return fmt.Errorf("%s: only %s free in %s, need at least %s; the volume was not touched",
			what, config.Size(free), dir, config.Size(need))
	}
	return nil
}

func create(dir, path string, v config.Volume) error {
	what := "volume " + v.Name
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := checkSpace(dir, minFree(v.Size), what); err != nil {
		return err
	}
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		return fmt.Errorf("%s: mkfs.ext4 is missing (install e2fsprogs)", what)
	}
	tmp := path + ".creating"
	os.Remove(tmp) // a leftover of an interrupted create holds no data
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	err = f.Truncate(int64(v.Size))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("%s: make sparse file: %w", what, err)
	}
	out, err := exec.Command(mkfs, "-F", "-q", "-L", v.Name, "-m", "0",
		"-E", "lazy_itable_init=1,lazy_journal_init=1", tmp).CombinedOutput()
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("%s: mkfs.ext4: %v: %s", what, err, strings.TrimSpace(string(out)))
	}
	if err := syncFile(tmp); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("%s: %w", what, err)
	}
	return syncDir(dir)
}

// grow enlarges the image and its filesystem (offline: the VM is stopped).
func grow(path string, v config.Volume) error {
	what := "volume " + v.Name
	if err := checkSpace(filepath.Dir(path), 64<<20, what); err != nil {
		return err
	}
	if out, err := exec.Command("e2fsck", "-f", "-p", path).CombinedOutput(); err != nil {
		// Exit code 1 means errors were corrected; anything else is fatal.
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() > 1 {
			return fmt.Errorf("%s: e2fsck before growing: %v: %s", what, err, strings.TrimSpace(string(out)))
		}
	}
	if err := os.Truncate(path, int64(v.Size)); err != nil {
		return fmt.Errorf("%s: grow image: %w", what, err)
	}
	if out, err := exec.Command("resize2fs", path).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: resize2fs: %v: %s", what, err, strings.TrimSpace(string(out)))
	}
	return syncFile(path)
}

func syncFile(p string) error {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func syncDir(d string) error {
	f, err := os.Open(d)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
