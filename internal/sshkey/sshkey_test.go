package sshkey

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// VMs booting in parallel all ensure microvm's client key at once: they
// must all end up with the same key (a key overwritten after one VM
// authorized it locked that VM out).
func TestEnsureConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ssh", "id_ed25519")
	var wg sync.WaitGroup
	lines := make([]string, 16)
	for i := range lines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, _, err := Ensure(path, "microvm")
			if err != nil {
				t.Error(err)
				return
			}
			lines[i] = AuthorizedLine(s)
		}()
	}
	wg.Wait()
	for i, l := range lines {
		if l != lines[0] {
			t.Fatalf("caller %d got another key", i)
		}
	}
	s, _, err := Ensure(path, "microvm")
	if err != nil || AuthorizedLine(s) != lines[0] {
		t.Errorf("the key on disk differs: %v", err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("left behind: %v", entries)
	}
}

func TestEnsureCorrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key")
	os.WriteFile(path, []byte("garbage"), 0o600)
	if _, _, err := Ensure(path, "x"); err == nil {
		t.Error("a corrupt key was accepted")
	}
}
