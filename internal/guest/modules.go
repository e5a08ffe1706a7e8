package guest

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Module names the guest needs. Required ones must be present (as a module or
// built in); optional ones are added when the kernel has them.
var (
	requiredModules = []string{"virtio_net", "virtio_blk", "overlay", "ext4", "9p", "9pnet_virtio"}
	anyOfBus        = []string{"virtio_pci", "virtio_mmio"} // at least one
	// crc32c is a soft dependency of ext4 (requested through the crypto API,
	// which would need modprobe in the guest), so it is loaded up front.
	// button (ACPI, x86) and gpio_keys (aarch64 virt) deliver the power
	// button; evdev makes it readable.
	optionalModules = []string{"virtio_pci", "virtio_mmio", "crc32c_generic", "crc32c_intel", "virtio_rng", "virtiofs", "vmw_vsock_virtio_transport", "button", "gpio_keys", "evdev"}
)

// ModuleSet is the kernel's modules.dep, modules.builtin and the chosen
// modules in load order.
type ModuleSet struct {
	// Dir is the modules directory.
	Dir string
	// Files are module paths relative to Dir, dependencies first.
	Files []string
}

// normName turns "kernel/fs/9p/9p.ko.xz" or "9p-net" into "9p" / "9p_net".
func normName(path string) string {
	base := filepath.Base(path)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		base = strings.TrimSuffix(base, ext)
	}
	base = strings.TrimSuffix(base, ".ko")
	return strings.ReplaceAll(base, "-", "_")
}

// ResolveModules reads dir's modules.dep (and modules.builtin) and returns
// the guest's modules with every dependency, dependencies first.
func ResolveModules(dir string) (*ModuleSet, error) {
	deps, err := readDeps(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, err
	}
	builtin := map[string]bool{}
	if f, err := os.Open(filepath.Join(dir, "modules.builtin")); err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			builtin[normName(s.Text())] = true
		}
		f.Close()
	}
	byName := map[string]string{}
	for path := range deps {
		byName[normName(path)] = path
	}
	has := func(n string) bool { return builtin[n] || byName[n] != "" }
	var missing []string
	for _, n := range requiredModules {
		if !has(n) {
			missing = append(missing, n)
		}
	}
	if !has(anyOfBus[0]) && !has(anyOfBus[1]) {
		missing = append(missing, strings.Join(anyOfBus, " or "))
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("kernel modules in %s lack %s, which the guest needs", dir, strings.Join(missing, ", "))
	}
	ms := &ModuleSet{Dir: dir}
	seen := map[string]bool{}
	var visit func(path string)
	visit = func(path string) {
		if seen[path] {
			return
		}
		seen[path] = true
		for _, d := range deps[path] {
			visit(d)
		}
		ms.Files = append(ms.Files, path)
	}
	// Buses and crc32c first, so the drivers and ext4 find them.
	for _, n := range append(append([]string{}, optionalModules...), requiredModules...) {
		if p := byName[n]; p != "" {
			visit(p)
		}
	}
	return ms, nil
}

// readDeps parses modules.dep: "path: dep dep …".
func readDeps(path string) (map[string][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("kernel modules: %w (run depmod)", err)
	}
	defer f.Close()
	deps := map[string][]string{}
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64*1024), 1024*1024)
	for s.Scan() {
		mod, rest, ok := strings.Cut(s.Text(), ":")
		if !ok {
			continue
		}
		deps[mod] = strings.Fields(rest)
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return deps, nil
}
