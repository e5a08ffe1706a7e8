// Package moddisk gives a guest its kernel's own module tree: the
// directory that holds modules.dep, as a read-only ext4 disk image built
// once per kernel and shared by every VM that boots it (on any backend and
// store kind), which the guest mounts at /lib/modules/$(uname -r) so that
// modprobe, udev and systemd's modprobe@.service work in any image.
package moddisk

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"microvm.dev/microvm/internal/storeimage"
)

// Label is the disk's ext4 label.
const Label = "microvm-modules"

// indexFiles are what depmod writes: a module added, removed or rebuilt
// without depmod is not loadable by modprobe either, so they stand for
// the whole tree in the key.
var indexFiles = []string{"modules.dep", "modules.order", "modules.builtin", "modules.alias", "modules.softdep", "modules.symbols"}

// Path is where the disk image of the module tree dir is cached under
// cacheDir, keyed by the tree's path and its depmod indexes (size,
// modification time, inode): found without reading the tree, so it costs
// nothing on every start.
func Path(cacheDir, dir string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "microvm-moddisk-1\n%s\n", filepath.Clean(dir))
	for _, name := range indexFiles {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			if name == "modules.dep" {
				return "", fmt.Errorf("kernel modules: %w (run depmod for it)", err)
			}
			fmt.Fprintf(h, "%s -\n", name)
			continue
		}
		var ino uint64
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ino = st.Ino
		}
		fmt.Fprintf(h, "%s %d %d %d\n", name, fi.Size(), fi.ModTime().UnixNano(), ino)
	}
	return filepath.Join(cacheDir, hex.EncodeToString(h.Sum(nil))[:32]+".ext4"), nil
}

// Ensure builds the disk image of dir at path (from Path) unless it is
// there already; built says whether it was made now. Concurrent starts
// build it once.
func Ensure(path, dir string) (built bool, err error) {
	built, err = storeimage.EnsureLabeled(path, dir, Label)
	if err != nil {
		return false, fmt.Errorf("kernel modules disk of %s: %w", dir, err)
	}
	return built, nil
}
