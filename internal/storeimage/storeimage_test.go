package storeimage

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"microvm.dev/microvm/internal/testutil"
)

func tree(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tree")
	for _, d := range []string{"bin", "etc", "srv/data"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	os.WriteFile(filepath.Join(dir, "bin", "tool"), []byte("#!/bin/sh\necho hi\n"), 0o755)
	os.WriteFile(filepath.Join(dir, "etc", "secret"), []byte("s3cret\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "srv/data", "big"), make([]byte, 3<<20), 0o644)
	os.Symlink("/bin/tool", filepath.Join(dir, "usr-tool"))
	os.Lchown(filepath.Join(dir, "srv/data"), 1000, 1000)
	return dir
}

// TestBuildOnceWithModesAndOwners builds a real ext4 image with mkfs.ext4
// and reads it back with debugfs.
func TestBuildOnceWithModesAndOwners(t *testing.T) {
	testutil.RequireCommand(t, "mkfs.ext4")
	testutil.RequireCommand(t, "debugfs")
	src := tree(t)
	cache := t.TempDir()
	path, err := Path(cache, src)
	if err != nil {
		t.Fatal(err)
	}
	// Concurrent VMs on one image: built exactly once.
	var wg sync.WaitGroup
	builds := make(chan bool, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := Ensure(path, src)
			if err != nil {
				t.Error(err)
			}
			builds <- b
		}()
	}
	wg.Wait()
	close(builds)
	n := 0
	for b := range builds {
		if b {
			n++
		}
	}
	if n != 1 {
		t.Errorf("built %d times, want once", n)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o444 {
		t.Fatalf("image %v %v: want a read-only file", fi, err)
	}
	if out, err := exec.Command("e2fsck", "-fn", path).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck: %v\n%s", err, out)
	}
	debugfs := func(req string) string {
		out, err := exec.Command("debugfs", "-R", req, path).CombinedOutput()
		if err != nil {
			t.Fatalf("debugfs %s: %v\n%s", req, err, out)
		}
		return string(out)
	}
	if out := debugfs("cat /bin/tool"); !strings.Contains(out, "echo hi") {
		t.Errorf("/bin/tool = %q", out)
	}
	for file, want := range map[string]string{
		"/etc/secret": "Mode:  0600", "/bin/tool": "Mode:  0755", "/srv/data": "User:  1000   Group:  1000",
		"/usr-tool": "Type: symlink",
	} {
		if out := debugfs("stat " + file); !strings.Contains(out, want) {
			t.Errorf("%s lacks %q:\n%s", file, want, out)
		}
	}
	// Unchanged tree: same key, nothing built. Changed file: new key.
	if again, _ := Path(cache, src); again != path {
		t.Errorf("key changed without a change: %s vs %s", again, path)
	}
	time.Sleep(10 * time.Millisecond)
	os.WriteFile(filepath.Join(src, "etc", "secret"), []byte("changed\n"), 0o600)
	if changed, _ := Path(cache, src); changed == path {
		t.Error("key did not change with the content")
	}
}

func TestMissingTree(t *testing.T) {
	if _, err := Path(t.TempDir(), "/nonexistent/tree"); err == nil || !strings.Contains(err.Error(), "/nonexistent/tree") {
		t.Fatalf("err = %v", err)
	}
}
