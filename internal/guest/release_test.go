package guest

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeBzImage is the setup header of an x86 bzImage whose version string
// says rel.
func fakeBzImage(t *testing.T, rel string) string {
	t.Helper()
	b := make([]byte, 0x400)
	copy(b[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(b[0x20e:], 0x300-0x200)
	copy(b[0x300:], rel+" (builder@host) #1 SMP")
	p := filepath.Join(t.TempDir(), "vmlinuz")
	os.WriteFile(p, b, 0o644)
	return p
}

// TestKernelRelease reads the release from a bzImage's header and from
// the banner of a raw or gzip-compressed image (arm64's vmlinuz).
func TestKernelRelease(t *testing.T) {
	if got, err := KernelRelease(fakeBzImage(t, "6.1.0-57-amd64")); err != nil || got != "6.1.0-57-amd64" {
		t.Errorf("bzImage: %q %v", got, err)
	}
	banner := append(bytes.Repeat([]byte{0}, 3<<20), []byte("Linux version 6.12.9-arm64 (debian-kernel@lists.debian.org) #1")...)
	raw := filepath.Join(t.TempDir(), "Image")
	os.WriteFile(raw, banner, 0o644)
	if got, err := KernelRelease(raw); err != nil || got != "6.12.9-arm64" {
		t.Errorf("raw image: %q %v", got, err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(banner)
	zw.Close()
	comp := filepath.Join(t.TempDir(), "vmlinuz.gz")
	os.WriteFile(comp, gz.Bytes(), 0o644)
	if got, err := KernelRelease(comp); err != nil || got != "6.12.9-arm64" {
		t.Errorf("gzip image: %q %v", got, err)
	}
	none := filepath.Join(t.TempDir(), "blob")
	os.WriteFile(none, []byte("no banner here"), 0o644)
	if got, err := KernelRelease(none); err != nil || got != "" {
		t.Errorf("an image without a release: %q %v, want unknown", got, err)
	}
}

// TestCheckRelease, on Debian's kernel: its image and modules agree (also
// the PVH vmlinux extracted from it), and a modules directory built for
// another release (a module whose vermagic says so) is refused naming
// both paths.
func TestCheckRelease(t *testing.T) {
	dirs, _ := filepath.Glob(filepath.Join(DefaultKernelCache, "amd64", "*"))
	if len(dirs) == 0 {
		t.Skip("no Debian kernel in the cache (scripts/fetch-kernel.sh)")
	}
	dir := dirs[len(dirs)-1]
	rel := filepath.Base(dir)
	k := Kernel{Image: filepath.Join(dir, "vmlinuz"), Modules: filepath.Join(dir, "modules")}
	if got, err := CheckRelease(k); err != nil || got != rel {
		t.Fatalf("Debian's kernel: %q %v, want %s", got, err, rel)
	}
	if pvh, err := PVHKernel(k.Image, t.TempDir()); err == nil && pvh != "" {
		if got, err := KernelRelease(pvh); err != nil || got != rel {
			t.Errorf("the PVH vmlinux: %q %v, want %s", got, err, rel)
		}
	}
	// A modules directory for another release: one module, its vermagic
	// rewritten (same length).
	other := rel[:len(rel)-1] + "x"
	mods := t.TempDir()
	order, _ := os.ReadFile(filepath.Join(k.Modules, "modules.order"))
	first, _, _ := strings.Cut(string(order), "\n")
	data, err := os.ReadFile(filepath.Join(k.Modules, first))
	if err != nil {
		t.Fatal(err)
	}
	data = bytes.ReplaceAll(data, []byte("vermagic="+rel), []byte("vermagic="+other))
	os.MkdirAll(filepath.Dir(filepath.Join(mods, first)), 0o755)
	os.WriteFile(filepath.Join(mods, first), data, 0o644)
	os.WriteFile(filepath.Join(mods, "modules.order"), []byte(first+"\n"), 0o644)
	os.WriteFile(filepath.Join(mods, "modules.dep"), []byte(first+":\n"), 0o644)
	_, err = CheckRelease(Kernel{Image: k.Image, Modules: mods})
	if err == nil || !strings.Contains(err.Error(), k.Image) || !strings.Contains(err.Error(), mods) || !strings.Contains(err.Error(), other) {
		t.Errorf("modules of another release: %v; want both paths and %s", err, other)
	}
	if _, err := CheckRelease(Kernel{Image: k.Image, Modules: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "depmod") {
		t.Errorf("an empty modules directory: %v", err)
	}
}
