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
	// virtio_balloon reports the guest's free pages to the host.
	optionalModules = []string{"virtio_pci", "virtio_mmio", "crc32c_generic", "crc32c_intel", "virtio_rng", "virtio_balloon", "virtiofs", "button", "gpio_keys", "evdev"}
)

// ModuleSet is the kernel's modules.dep, modules.builtin and the chosen
// modules in load order.
type ModuleSet struct {
	// Dir is the modules directory.
	Dir string
	// Files are module paths relative to Dir, dependencies first.
	Files []string
	// Deps are each file's direct dependencies (files relative to Dir).
	Deps map[string][]string
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
	ix, err := readIndex(dir)
	if err != nil {
		return nil, err
	}
	var missing []string
	for _, n := range requiredModules {
		if !ix.has(n) {
			missing = append(missing, n)
		}
	}
	if !ix.has(anyOfBus[0]) && !ix.has(anyOfBus[1]) {
		missing = append(missing, strings.Join(anyOfBus, " or "))
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("kernel modules in %s lack %s, which the guest needs", dir, strings.Join(missing, ", "))
	}
	w := depsFirst{deps: ix.deps}
	// Buses and crc32c first, so the drivers and ext4 find them.
	for _, n := range append(append([]string{}, optionalModules...), requiredModules...) {
		if p := ix.byName[n]; p != "" {
			w.add(p)
		}
	}
	return &ModuleSet{Dir: dir, Deps: ix.deps, Files: w.out}, nil
}

// moduleIndex is a module tree's modules.dep and modules.builtin.
type moduleIndex struct {
	dir     string
	deps    map[string][]string // module file → the files it needs
	byName  map[string]string   // module name → its file
	builtin map[string]bool     // names of modules built into the kernel
}

func readIndex(dir string) (*moduleIndex, error) {
	deps, err := readDeps(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, err
	}
	ix := &moduleIndex{dir: dir, deps: deps, byName: map[string]string{}, builtin: map[string]bool{}}
	for p := range deps {
		ix.byName[normName(p)] = p
	}
	if f, err := os.Open(filepath.Join(dir, "modules.builtin")); err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			ix.builtin[normName(s.Text())] = true
		}
		f.Close()
	}
	return ix, nil
}

// has says whether the kernel has module n, built in or as a file.
func (ix *moduleIndex) has(n string) bool { return ix.builtin[n] || ix.byName[n] != "" }

// depsFirst orders module files each after the files it needs, each once.
type depsFirst struct {
	deps map[string][]string
	seen map[string]bool
	out  []string
}

// add puts p, after what it needs, in the order (if not there yet).
func (w *depsFirst) add(p string) {
	if w.seen[p] {
		return
	}
	if w.seen == nil {
		w.seen = map[string]bool{}
	}
	w.seen[p] = true
	for _, d := range w.deps[p] {
		w.add(d)
	}
	w.out = append(w.out, p)
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

// ModuleLine is one line of the initramfs's ModulesDepsPath: a module's
// path in the initramfs, then the names of the modules it needs.
func ModuleLine(path string, deps []string) string {
	names := make([]string, len(deps))
	for i, d := range deps {
		names[i] = normName(d)
	}
	return strings.Join(append([]string{path}, names...), " ")
}

// NeededModules are the modules a guest with spec loads: the NIC and disk
// drivers, the buses, the power button, entropy and overlay always; ext4
// (with crc32c) for a block store, any volume or the kernel's module
// tree; 9p or virtiofs for a store shared that way. Leaving the others
// out is what keeps the boot short: loading a module is emulated code
// under TCG (ext4 alone is 2 MB).
func NeededModules(spec *Spec) []string {
	need := []string{"virtio_pci", "virtio_mmio", "virtio_net", "virtio_blk", "virtio_rng", "virtio_balloon", "overlay", "button", "gpio_keys", "evdev"}
	if spec.Store.FSType == "ext4" || len(spec.Volumes) > 0 || spec.Modules != nil {
		need = append(need, "crc32c_generic", "crc32c_intel", "ext4")
	}
	switch spec.Store.FSType {
	case "9p":
		need = append(need, "9p", "9pnet_virtio")
	case "virtiofs":
		need = append(need, "virtiofs")
	}
	return need
}

// ModulePlan reads the ModulesDepsPath list (ModuleLine lines,
// dependencies first)
// and returns the paths of the modules needed (with everything they
// depend on) in waves: the modules of a wave need only those of earlier
// waves, so each wave's can load at once.
func ModulePlan(list string, needed []string) [][]string {
	type mod struct {
		path string
		deps []string
	}
	mods := map[string]mod{}
	var order []string
	for _, line := range strings.Split(list, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		name := normName(f[0])
		mods[name] = mod{path: f[0], deps: f[1:]}
		order = append(order, name)
	}
	want := map[string]bool{}
	var mark func(string)
	mark = func(n string) {
		m, ok := mods[n]
		if !ok || want[n] {
			return
		}
		want[n] = true
		for _, d := range m.deps {
			mark(d)
		}
	}
	for _, n := range needed {
		mark(n)
	}
	wave := map[string]int{}
	var waves [][]string
	for _, n := range order { // dependencies come first
		if !want[n] {
			continue
		}
		w := 0
		for _, d := range mods[n].deps {
			if dw, ok := wave[d]; ok && dw+1 > w {
				w = dw + 1
			}
		}
		wave[n] = w
		for len(waves) <= w {
			waves = append(waves, nil)
		}
		waves[w] = append(waves[w], mods[n].path)
	}
	return waves
}
