package volume

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/testutil"
)

func blockCount(t *testing.T, img string) string {
	t.Helper()
	out, err := exec.Command("dumpe2fs", "-h", img).CombinedOutput()
	if err != nil {
		t.Fatalf("dumpe2fs: %v\n%s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "Block count:") {
			return strings.TrimSpace(strings.TrimPrefix(l, "Block count:"))
		}
	}
	t.Fatalf("no block count:\n%s", out)
	return ""
}

func TestCreateGrowNeverShrink(t *testing.T) {
	testutil.RequireCommand(t, "mkfs.ext4")
	dir := t.TempDir()
	v := config.Volume{Name: "data", MountPoint: "/mnt/storage", Size: 64 * config.MiB}
	act, err := Ensure(dir, v)
	if err != nil || act != Created {
		t.Fatalf("create: %s, %v", act, err)
	}
	img := Path(dir, "data")
	fi, _ := os.Stat(img)
	if fi.Size() != int64(v.Size) || fi.Mode().Perm() != 0o600 {
		t.Errorf("image: size %d mode %v", fi.Size(), fi.Mode())
	}
	out, _ := exec.Command("dumpe2fs", "-h", img).CombinedOutput()
	if !strings.Contains(string(out), "Filesystem volume name:   data") {
		t.Errorf("label not set:\n%s", out)
	}
	before := blockCount(t, img)
	if act, err := Ensure(dir, v); err != nil || act != Kept {
		t.Fatalf("second ensure: %s, %v", act, err)
	}
	v.Size = 128 * config.MiB
	if act, err := Ensure(dir, v); err != nil || act != Grown {
		t.Fatalf("grow: %s, %v", act, err)
	}
	if after := blockCount(t, img); after == before {
		t.Errorf("filesystem not grown: %s blocks", after)
	}
	if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
		t.Errorf("filesystem not clean after growing: %v\n%s", err, out)
	}
	v.Size = 64 * config.MiB
	_, err = Ensure(dir, v)
	if !errors.Is(err, ErrShrink) || !strings.Contains(err.Error(), "volume data is 128M on disk but the config says 64M") {
		t.Fatalf("shrink: %v", err)
	}
	if fi, _ := os.Stat(img); fi.Size() != int64(128*config.MiB) {
		t.Error("a refused shrink changed the image")
	}
}

// TestFullDisk: a volume that cannot fit is a clear error before anything
// is written, not a corrupt or half-made image.
func TestFullDisk(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=40M", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a small tmpfs: %v\n%s", err, out)
	}
	defer exec.Command("umount", dir).Run()
	_, err := Ensure(dir, config.Volume{Name: "data", MountPoint: "/d", Size: 8 * config.GiB})
	if err == nil || !strings.Contains(err.Error(), "free in") || !strings.Contains(err.Error(), "need at least") {
		t.Fatalf("want a free-space error, got %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Errorf("a refused create left %v behind", entries)
	}
	if _, err := os.Stat(filepath.Join(dir, "data.img")); !os.IsNotExist(err) {
		t.Error("image exists after a refused create")
	}
	testutil.Report(t, testutil.FaultResult{Fault: "disk full while creating a volume (a 40M tmpfs, an 8G volume)", Trials: 1, Result: "refused before writing, with the space needed; nothing left behind"})
}

// A disk too full to grow a volume: a clear error and the existing image
// untouched (its bytes compared). The "disk" is a small tmpfs.
func TestFullDiskKeepsExistingVolume(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "mkfs.ext4")
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=96m"); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	small := config.Volume{Name: "small", MountPoint: "/mnt/s", Size: 16 * config.MiB}
	if act, err := Ensure(dir, small); err != nil || act != Created {
		t.Fatalf("a 16M volume: %v %v", act, err)
	}
	path := Path(dir, "small")
	before, _ := os.ReadFile(path)
	// Fill the disk, then ask for more room than is left.
	filler, _ := os.Create(filepath.Join(dir, "filler"))
	io.Copy(filler, io.LimitReader(zeroReader{}, 90<<20))
	filler.Close()
	small.Size = 8 * config.GiB
	if _, err := Ensure(dir, small); err == nil || !strings.Contains(err.Error(), "free") {
		t.Errorf("growing on a full disk: %v", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("the existing volume changed after a failed grow")
	}
	testutil.Report(t, testutil.FaultResult{Fault: "disk full while growing a volume", Trials: 1, Result: "refused; the existing image byte-identical"})
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
