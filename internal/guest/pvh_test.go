package guest

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"microvm.dev/microvm/internal/config"
)

// Debian's own kernel (the bzImage scripts/fetch-kernel.sh caches): its
// vmlinux is extracted once, is an ELF with the PVH entry note, and a
// second call finds it in the cache. Files that are no x86 kernel give "".
func TestPVHKernelFromDebiansBzImage(t *testing.T) {
	k, err := ResolveKernel(config.Kernel{}, "x86_64", "x86_64", DefaultKernelCache)
	if err != nil {
		t.Skipf("no Debian kernel cached (scripts/fetch-kernel.sh): %v", err)
	}
	cache := t.TempDir()
	v, err := PVHKernel(k.Image, cache)
	if err != nil || v == "" {
		t.Fatalf("PVHKernel(%s) = %q, %v", k.Image, v, err)
	}
	f, err := os.Open(v)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !hasPVHNote(f) {
		t.Errorf("%s has no PVH note", v)
	}
	if again, err := PVHKernel(k.Image, cache); again != v || err != nil {
		t.Errorf("second call: %q %v, want the cached %q", again, err, v)
	}
	if self, err := PVHKernel(v, cache); self != v || err != nil {
		t.Errorf("a PVH vmlinux is itself: %q %v", self, err)
	}
	junk := filepath.Join(t.TempDir(), "junk")
	os.WriteFile(junk, bytes.Repeat([]byte("x"), 4096), 0o644)
	if got, err := PVHKernel(junk, cache); got != "" || err != nil {
		t.Errorf("junk: %q %v", got, err)
	}
	if got, err := PVHKernel("/bin/true", cache); got != "" || err != nil {
		t.Errorf("an ELF without the note: %q %v", got, err)
	}
}
