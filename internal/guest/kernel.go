package guest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"golang.org/x/sys/unix"

	"microvm.dev/microvm/internal/config"
)

// DefaultKernelCache is where scripts/fetch-kernel.sh puts kernels:
// <cache>/<deb arch>/<release>/{vmlinuz,modules/}.
const DefaultKernelCache = "/var/cache/microvm/kernels"

// Kernel is a resolved guest kernel.
type Kernel struct {
	// Image is the kernel image to boot.
	Image string `json:"image"`
	// Modules is the directory holding modules.dep for this kernel.
	Modules string `json:"modules"`
}

// debArch maps QEMU's architecture names to Debian's.
func debArch(arch string) string {
	if arch == "aarch64" {
		return "arm64"
	}
	return "amd64"
}

// ResolveKernel finds the kernel of k for a guest of arch. "host" is the
// running kernel when /boot and /lib/modules hold it and the guest has the
// host's architecture; otherwise the newest kernel in cache. A given path
// must exist, with its modules directory.
func ResolveKernel(k config.Kernel, arch, hostArch, cache string) (Kernel, error) {
	if !k.IsHost() {
		kern := Kernel{Image: k.Path, Modules: k.Modules}
		if _, err := os.Stat(k.Path); err != nil {
			return Kernel{}, fmt.Errorf("kernel.path: %w", err)
		}
		if kern.Modules == "" {
			return Kernel{}, fmt.Errorf("kernel.modules is required with kernel.path (the directory holding modules.dep)")
		}
		if _, err := os.Stat(filepath.Join(kern.Modules, "modules.dep")); err != nil {
			return Kernel{}, fmt.Errorf("kernel.modules: %w (run depmod for it)", err)
		}
		return kern, nil
	}
	var tried []string
	if arch == hostArch {
		if rel, err := RunningRelease(); err == nil {
			kern := Kernel{Image: "/boot/vmlinuz-" + rel, Modules: "/lib/modules/" + rel}
			if readable(kern.Image) && readable(filepath.Join(kern.Modules, "modules.dep")) {
				return kern, nil
			}
			tried = append(tried, kern.Image+" with "+kern.Modules)
		}
	}
	dir := filepath.Join(cache, debArch(arch))
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return Kernel{}, fmt.Errorf("kernel cache: %w", err)
	}
	var releases []string
	for _, e := range entries {
		if readable(filepath.Join(dir, e.Name(), "vmlinuz")) && readable(filepath.Join(dir, e.Name(), "modules", "modules.dep")) {
			releases = append(releases, e.Name())
		}
	}
	if len(releases) == 0 {
		tried = append(tried, dir+"/<release>/vmlinuz")
		return Kernel{}, fmt.Errorf("kernel: host: no usable kernel for %s (looked for %v); run scripts/fetch-kernel.sh %s, or set kernel: {path, modules}",
			arch, tried, debArch(arch))
	}
	sort.Strings(releases)
	rel := releases[len(releases)-1]
	return Kernel{Image: filepath.Join(dir, rel, "vmlinuz"), Modules: filepath.Join(dir, rel, "modules")}, nil
}

// RunningRelease is the running kernel's release (uname -r).
func RunningRelease() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", fmt.Errorf("uname: %w", err)
	}
	return unix.ByteSliceToString(u.Release[:]), nil
}

func readable(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	f.Close()
	return true
}
