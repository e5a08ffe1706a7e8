package vmmuser

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestParseRange(t *testing.T) {
	r, err := ParseRange("1879048192:65536")
	if err != nil || r.UID != 1879048192 || r.GID != 1879048192 || r.Count != 65536 {
		t.Fatalf("%+v %v", r, err)
	}
	for _, bad := range []string{"", "0:10", "5", "5:0", "x:1", "4294967290:100"} {
		if _, err := ParseRange(bad); err == nil {
			t.Errorf("%q was accepted", bad)
		}
	}
}

func TestSubordinate(t *testing.T) {
	dir := t.TempDir()
	sub := func(name, text string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(text), 0o644)
		return p
	}
	uids := sub("subuid", "alice:100000:65536\nmicrovm:1879048192:65536\nmicrovm:5:5\n")
	gids := sub("subgid", "microvm:1879113728:1000\n")
	r, ok, err := Subordinate("microvm", uids, gids)
	if err != nil || !ok || r.UID != 1879048192 || r.GID != 1879113728 || r.Count != 1000 {
		t.Fatalf("%+v %v %v", r, ok, err)
	}
	if _, ok, err := Subordinate("bob", uids, gids); ok || err != nil {
		t.Errorf("a user without a range: %v %v", ok, err)
	}
	if _, ok, _ := Subordinate("microvm", uids, filepath.Join(dir, "missing")); ok {
		t.Error("a range without subgid counted")
	}
	if _, _, err := Subordinate("microvm", sub("bad", "microvm:x:1\n"), gids); err == nil || !strings.Contains(err.Error(), "unreadable") {
		t.Errorf("a broken line: %v", err)
	}
	u := (&User{Name: "microvm", Groups: []uint32{108}, IDs: &r}).ForVM(3)
	if u.UID != 1879048195 || u.GID != 1879113731 || len(u.Groups) != 1 || u.IDs != nil {
		t.Errorf("ForVM: %+v", u)
	}
}

// TestOffsets: each VM keeps its id; a new one takes the lowest free; a
// look without allocating writes nothing; concurrent allocations never
// give two VMs the same id; a full range is an error.
func TestOffsets(t *testing.T) {
	o := Offsets{VMsDir: t.TempDir(), Count: 40}
	if n, err := o.Lookup("a", false); err != nil || n != 1 {
		t.Fatalf("peek: %d %v", n, err)
	}
	if _, err := os.Stat(filepath.Join(o.VMsDir, "a", IdentityFile)); err == nil {
		t.Fatal("a peek wrote an identity")
	}
	var wg sync.WaitGroup
	got := make([]uint32, 30)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := o.Lookup(string(rune('a'+i%26))+strings.Repeat("x", i/26), true)
			if err != nil {
				t.Error(err)
			}
			got[i] = n
		}()
	}
	wg.Wait()
	seen := map[uint32]bool{}
	for _, n := range got {
		if seen[n] || n == 0 {
			t.Fatalf("ids %v: %d given twice (or 0)", got, n)
		}
		seen[n] = true
	}
	first, _ := o.Lookup("a", true)
	if again, _ := o.Lookup("a", true); again != first || first != got[0] {
		t.Errorf("a's id changed: %d, %d, %d", got[0], first, again)
	}
	os.RemoveAll(filepath.Join(o.VMsDir, "c")) // purged: its id is free again
	if n, _ := o.Lookup("new", true); n != got[2] {
		t.Errorf("a new VM got %d, want the freed %d", n, got[2])
	}
	full := Offsets{VMsDir: t.TempDir(), Count: 2}
	full.Lookup("one", true)
	if _, err := full.Lookup("two", true); err == nil || !strings.Contains(err.Error(), "taken") {
		t.Errorf("a full range: %v", err)
	}
}
