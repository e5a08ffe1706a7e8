package savestate

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMismatch(t *testing.T) {
	dir := t.TempDir()
	kernel, vol := filepath.Join(dir, "vmlinux"), filepath.Join(dir, "data.img")
	os.WriteFile(kernel, []byte("kernel"), 0o644)
	os.WriteFile(vol, []byte("volume"), 0o600)
	argv := []string{"qemu", "-m", "256M"}
	saved, err := NewKey("spec1", argv, []string{kernel, vol})
	if err != nil {
		t.Fatal(err)
	}
	same, _ := NewKey("spec1", argv, []string{kernel, vol})
	if why := Mismatch(saved, same); why != "" {
		t.Fatalf("the same VM: %s", why)
	}
	if why := Mismatch(saved, Key{SpecHash: "spec2", Argv: argv, Files: same.Files}); !strings.Contains(why, "spec changed") {
		t.Errorf("a changed spec: %q", why)
	}
	if why := Mismatch(saved, Key{SpecHash: "spec1", Argv: []string{"qemu", "-m", "512M"}, Files: same.Files}); !strings.Contains(why, "command line changed") {
		t.Errorf("a changed command line: %q", why)
	}
	// A volume written since the save (by hand, a restore): cold boot.
	future := time.Now().Add(time.Hour)
	os.Chtimes(vol, future, future)
	now, _ := NewKey("spec1", argv, []string{kernel, vol})
	if why := Mismatch(saved, now); why != "changed since the save: data.img" {
		t.Errorf("a written volume: %q", why)
	}
	// A kernel replaced by another file of the same size and time.
	fi, _ := os.Stat(kernel)
	os.Rename(kernel, kernel+".old")
	os.WriteFile(kernel, []byte("KERNEL"), 0o644)
	os.Chtimes(kernel, fi.ModTime(), fi.ModTime())
	now, _ = NewKey("spec1", argv, []string{kernel})
	if why := Mismatch(saved, now); !strings.Contains(why, "vmlinux") || !strings.Contains(why, "data.img") {
		t.Errorf("a replaced kernel and a missing volume: %q", why)
	}
	if _, err := NewKey("spec1", argv, []string{filepath.Join(dir, "gone")}); err == nil {
		t.Error("a missing file gave a key")
	}
}

// TestCommitLoadDrop: a state is resumable only once committed with its
// record; a partial one never is; Drop leaves nothing.
func TestCommitLoadDrop(t *testing.T) {
	d := Of(t.TempDir())
	if _, err := d.Load(); !errors.Is(err, ErrNone) {
		t.Fatalf("empty: %v", err)
	}
	f, err := d.Create(-1, -1)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("guest memory")
	f.Close()
	if _, err := d.Load(); !errors.Is(err, ErrNone) {
		t.Fatalf("a partial state counts as saved: %v", err)
	}
	if fi, err := os.Stat(string(d)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("saved-state directory: %v %v", fi.Mode(), err)
	}
	if c, err := d.Commit(Meta{SavedAt: time.Now(), Key: Key{SpecHash: "x"}}); err != nil || c.Bytes != int64(len("guest memory")) {
		t.Fatalf("commit: %+v %v", c, err)
	}
	m, err := d.Load()
	if err != nil || m.Bytes != int64(len("guest memory")) || m.Key.SpecHash != "x" {
		t.Fatalf("load: %+v %v", m, err)
	}
	if fi, _ := os.Stat(d.StateFile()); fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v", fi.Mode())
	}
	os.Remove(d.StateFile())
	if _, err := d.Load(); !errors.Is(err, ErrNone) {
		t.Errorf("a record without its state file counts as saved: %v", err)
	}
	if err := d.Drop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(string(d)); !os.IsNotExist(err) {
		t.Errorf("drop left %s", d)
	}
}
