package daemon

import (
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/testutil"
	"microvm.dev/microvm/internal/transfer"
)

// A read-only disk received for one VM is kept by its digest: another VM
// moving here later names that digest and gets the same bytes linked (the
// same inode, nothing streamed), even after the first VM's copy is gone;
// an unknown digest, a file that is not a read-only disk and a digest
// that is not one are refused.
func TestReceiveKeepsReadOnlyDisks(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNetns(t, "drk")
	st := t.TempDir()
	d, err := New(launch.Env{StateDir: st, RunDir: filepath.Join(st, "run"), NetNS: ns.Path}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.EnablePeers("b", nil)

	src := filepath.Join(t.TempDir(), "modules.ext4")
	data := make([]byte, 3<<20)
	rand.Read(data)
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(src)
	defer f.Close()
	pr, pw := io.Pipe()
	go func() {
		_, err := transfer.Send(pw, f)
		pw.CloseWithError(err)
	}()
	const pin = "pin.modules-6.1.0-57-amd64.ext4"
	got, err := d.Receive("a", "vm1", pin, pr)
	if err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(d.incoming("vm1")) // the first VM's move is over, or gave up

	st2, err := d.ReceiveCached("a", "vm2", pin, got.SHA256)
	if err != nil {
		t.Fatalf("ReceiveCached of the kept digest: %v", err)
	}
	linked := filepath.Join(d.incoming("vm2"), pin)
	b, _ := os.ReadFile(linked)
	if string(b) != string(data) || st2.SHA256 != got.SHA256 || st2.Size != int64(len(data)) || st2.Wire != 0 {
		t.Errorf("linked %d bytes, stats %+v; want the %d received, nothing on the wire", len(b), st2, len(data))
	}
	var a, c syscall.Stat_t
	syscall.Stat(linked, &a)
	syscall.Stat(filepath.Join(st, "pincache", got.SHA256), &c)
	if a.Ino != c.Ino {
		t.Error("the linked disk is a copy, not the kept file")
	}

	other := "0000000000000000000000000000000000000000000000000000000000000000"
	if _, err := d.ReceiveCached("a", "vm3", pin, other); !errors.Is(err, ErrNotCached) {
		t.Errorf("an unknown digest: %v, want ErrNotCached", err)
	}
	if _, err := d.ReceiveCached("a", "vm3", "data.img", got.SHA256); err == nil {
		t.Error("a volume was linked from the kept read-only disks")
	}
	if _, err := d.ReceiveCached("a", "vm3", pin, "../../etc/passwd"); err == nil || errors.Is(err, ErrNotCached) {
		t.Errorf("a digest that is a path: %v", err)
	}
}
