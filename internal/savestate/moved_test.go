package savestate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMoveRoundTrip: a state saved on one host, its files sent as a move
// names them and installed on the other, resumes there only onto the
// same spec, a kernel of the same bytes and the disks that came with it.
func TestMoveRoundTrip(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	kernel := filepath.Join(src, "vmlinux")
	store := filepath.Join(src, "cache", "abc.ext4")
	os.MkdirAll(filepath.Dir(store), 0o755)
	os.WriteFile(kernel, []byte("kernel"), 0o644)
	os.WriteFile(store, []byte("store image, a's build"), 0o644)

	d := Of(filepath.Join(src, "vm"))
	f, err := d.Create(-1, -1)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("guest memory")
	f.Close()
	key := Key{SpecHash: "spec1", Kernel: kernel, Pins: map[string]string{"store-abc.ext4": store}}
	if _, err := d.Commit(Meta{SavedAt: time.Now(), Key: key}); err != nil {
		t.Fatal(err)
	}
	meta, m, err := d.ForMove("a")
	if err != nil || m.Moved == nil || m.Moved.From != "a" || len(m.Moved.Kernel) != 64 {
		t.Fatalf("ForMove: %+v %v", m.Moved, err)
	}

	// What a move brings, in the order it may arrive.
	vmDir := filepath.Join(dst, "vm")
	os.MkdirAll(vmDir, 0o700)
	copyFile(t, meta, filepath.Join(vmDir, MovedMeta))
	copyFile(t, d.StateFile(), filepath.Join(vmDir, MovedState))
	copyFile(t, store, filepath.Join(vmDir, PinPrefix+"store-abc.ext4"))
	if resumes, err := InstallMoved(vmDir); err != nil || !resumes {
		t.Fatal(resumes, err)
	}
	got, err := Of(vmDir).Load()
	if err != nil || got.Moved == nil {
		t.Fatalf("the installed state: %+v %v", got, err)
	}
	pins := PinsOf(vmDir)
	if fi, err := os.Stat(pins.Path("store-abc.ext4")); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("the pinned store: %v %v", fi, err)
	}
	if p := pins.Use("store-abc.ext4", "/elsewhere"); p != pins.Path("store-abc.ext4") {
		t.Errorf("Use gives %s", p)
	}
	if p := pins.Use("store-other.ext4", "/elsewhere"); p != "/elsewhere" {
		t.Errorf("Use of a pin not there gives %s", p)
	}

	// This host's kernel: the same bytes elsewhere, then others.
	hostKernel := filepath.Join(dst, "vmlinux")
	os.WriteFile(hostKernel, []byte("kernel"), 0o644)
	now := Key{SpecHash: "spec1", Kernel: hostKernel, Pins: map[string]string{"store-abc.ext4": pins.Path("store-abc.ext4")}}
	if why := MovedMismatch(got, now, pins); why != "" {
		t.Fatalf("the same VM on the other host: %s", why)
	}
	own := now
	own.Pins = map[string]string{"store-abc.ext4": filepath.Join(dst, "cache", "abc.ext4")}
	if why := MovedMismatch(got, own, pins); !strings.Contains(why, "store-abc.ext4 did not come with it from a") {
		t.Errorf("on this host's own store image: %q", why)
	}
	spec := now
	spec.SpecHash = "spec2"
	if why := MovedMismatch(got, spec, pins); !strings.Contains(why, "spec here differs from the one saved on a") {
		t.Errorf("another spec: %q", why)
	}
	os.WriteFile(hostKernel, []byte("another kernel"), 0o644)
	if why := MovedMismatch(got, now, pins); !strings.Contains(why, "kernel here (vmlinux) is not the one it was saved with on a") {
		t.Errorf("another kernel: %q", why)
	}

	// Drop leaves the pins (a cold boot may still run on them) and no
	// record; Remove drops them.
	if err := Of(vmDir).Drop(); err != nil {
		t.Fatal(err)
	}
	if err := d.Drop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(string(d)); !os.IsNotExist(err) {
		t.Errorf("the source's drop left %s (the record for the move)", d)
	}
	if err := pins.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(string(pins)); !os.IsNotExist(err) {
		t.Errorf("pins left after Remove")
	}
	// A move without a saved state installs nothing.
	if resumes, err := InstallMoved(t.TempDir()); err != nil || resumes {
		t.Errorf("a cold move's directory: %v %v", resumes, err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
