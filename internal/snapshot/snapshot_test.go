package snapshot

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestTakeListRestorePrune(t *testing.T) {
	dir := t.TempDir()
	vol := filepath.Join(dir, "data.img")
	f, _ := os.Create(vol)
	f.Truncate(64 << 20) // sparse, as volumes are
	f.WriteAt([]byte("version one"), 1<<20)
	f.Close()
	snaps := Dir(dir)
	t0 := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	s1, err := Take(snaps, "data", vol, t0)
	if err != nil {
		t.Fatal(err)
	}
	if s1.Name != "data@20261123T100000.000Z" || s1.Size != 64<<20 {
		t.Errorf("snapshot = %+v", s1)
	}
	// Holes stay holes (or blocks are shared): the copy uses little space.
	var st syscall.Stat_t
	syscall.Stat(filepath.Join(snaps, s1.Name+".img"), &st)
	if st.Blocks*512 > 8<<20 {
		t.Errorf("the snapshot of a sparse 64M volume takes %d bytes (%s)", st.Blocks*512, s1.Method)
	}
	f, _ = os.OpenFile(vol, os.O_WRONLY, 0)
	f.WriteAt([]byte("version two"), 1<<20)
	f.Close()
	list, _ := List(snaps)
	if len(list) != 1 || list[0].Name != s1.Name {
		t.Fatalf("list = %+v", list)
	}
	before, err := Restore(snaps, s1.Name, vol, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 11)
	f, _ = os.Open(vol)
	f.ReadAt(b, 1<<20)
	f.Close()
	if string(b) != "version one" {
		t.Errorf("after restore: %q", b)
	}
	// The volume as it was before the restore is a snapshot too.
	kept, _ := os.ReadFile(filepath.Join(snaps, before.Name+".img"))
	if !bytes.Contains(kept, []byte("version two")) {
		t.Error("the pre-restore state was not kept")
	}
	for i := range 5 {
		Take(snaps, "data", vol, t0.Add(time.Duration(2+i)*time.Hour))
	}
	removed, err := Prune(snaps, 3)
	if err != nil || len(removed) != 4 {
		t.Errorf("prune removed %v, %v", removed, err)
	}
	if list, _ := List(snaps); len(list) != 3 || !strings.HasSuffix(list[2].Name, "T160000.000Z") {
		t.Errorf("kept %+v", list)
	}
	for _, bad := range []string{"../../etc/passwd", ".hidden", "data@nope"} {
		if _, err := Restore(snaps, bad, vol, t0); err == nil {
			t.Errorf("restore %q accepted", bad)
		}
	}
}
