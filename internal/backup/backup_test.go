package backup

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/testutil"
)

// sparseImage writes a 64 MiB sparse file with data in two places.
func sparseImage(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data := make([]byte, 1<<20)
	rand.Read(data)
	for _, off := range []int64{0, 40 << 20} {
		if _, err := f.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
}

func sum(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

// With Debian's restic and a repository on a local path: a snapshot sent
// is listed by its VM, volume and name, comes back with the same bytes
// and its holes, is pruned to keep; another password is refused with
// restic's reason; a repository that is not there yet is made.
func TestSendFetchPrune(t *testing.T) {
	testutil.RequireCommand(t, "restic")
	ctx := context.Background()
	dir := t.TempDir()
	repo := Repo{Repository: filepath.Join(dir, "repo"), Password: "correct horse", Host: "host-a", CacheDir: filepath.Join(dir, "cache")}
	src := filepath.Join(dir, "data@1.img")
	sparseImage(t, src)
	var sent []Backup
	for i := range 3 {
		snap := apitypes.Snapshot{Name: "data@2026120" + string(rune('1'+i)) + "T000000.000Z", Volume: "data", Time: time.Date(2026, 12, 1+i, 0, 0, 0, 0, time.UTC), Size: 64 << 20}
		b, err := repo.Send(ctx, "vm1", snap, src)
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, b)
	}
	list, err := repo.List(ctx, "vm1")
	if err != nil || len(list) != 3 || list[2].Snapshot != sent[2].Snapshot || list[2].ID != sent[2].ID || list[0].Host != "host-a" || list[0].Volume != "data" {
		t.Fatalf("List = %+v, %v; want the three sent", list, err)
	}
	if other, err := repo.List(ctx, "vm2"); err != nil || len(other) != 0 {
		t.Errorf("another VM's backups: %+v, %v", other, err)
	}

	dst := filepath.Join(dir, "restored.img")
	b, err := repo.Find(ctx, "vm1", sent[1].Snapshot)
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Fetch(ctx, b, dst); err != nil {
		t.Fatal(err)
	}
	if sum(t, dst) != sum(t, src) {
		t.Error("the restored image's bytes differ from the snapshot's")
	}
	var st syscall.Stat_t
	syscall.Stat(dst, &st)
	if fi, _ := os.Stat(dst); fi.Size() != 64<<20 || st.Blocks*512 > 4<<20 {
		t.Errorf("restored: size %d, %d bytes allocated; want 64 MiB with its holes (2 MiB of data)", fi.Size(), st.Blocks*512)
	}
	if _, err := repo.Find(ctx, "vm1", "data@nope"); err == nil || !strings.Contains(err.Error(), "no backup of snapshot data@nope") {
		t.Errorf("Find of a missing snapshot: %v", err)
	}

	if err := repo.Prune(ctx, "vm1", "data", 1); err != nil {
		t.Fatal(err)
	}
	if list, _ := repo.List(ctx, "vm1"); len(list) != 1 || list[0].ID != sent[2].ID {
		t.Errorf("after pruning to 1: %+v, want the newest", list)
	}

	wrong := repo
	wrong.Password = "another"
	if err := wrong.Ensure(ctx); err == nil || !strings.Contains(err.Error(), "wrong password") {
		t.Errorf("another password: %v, want restic's refusal", err)
	}
	if _, err := wrong.Send(ctx, "vm1", apitypes.Snapshot{Name: "data@x", Volume: "data"}, src); err == nil {
		t.Error("a send with another password was taken")
	}
}

// The sparse writer keeps runs of zeros as holes, across writes of any size.
func TestSparseWriter(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := make([]byte, 3*blockSize+100)
	copy(want[blockSize+10:], "data")
	want[len(want)-1] = 1
	w := &sparseWriter{f: f}
	for p := want; len(p) > 0; {
		n := min(len(p), 777)
		w.Write(p[:n])
		p = p[n:]
	}
	if err := w.finish(); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(f.Name())
	if !bytes.Equal(got, want) {
		t.Error("the sparse writer changed the bytes")
	}
}
