package launch

import (
	"errors"
	"path/filepath"

	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/savestate"
	"microvm.dev/microvm/internal/vmm"
)

// usePins makes l run on the read-only disks its VM brought from another
// host with a saved state (savestate.Pins), where it has them, instead of
// this host's own builds of the same store tree and module tree; it
// returns every such disk of l by its pin name and the path it uses.
func usePins(vmDir string, kern guest.Kernel, l *vmm.Launch) map[string]string {
	pins := savestate.PinsOf(vmDir)
	out := map[string]string{}
	for i := range l.Shares {
		if sh := &l.Shares[i]; sh.Block != "" {
			name := "store-" + filepath.Base(sh.Block)
			sh.Block = pins.Use(name, sh.Block)
			out[name] = sh.Block
		}
	}
	if l.Modules != "" {
		name := "modules-" + kernelRelease(kern) + ".ext4"
		l.Modules = pins.Use(name, l.Modules)
		out[name] = l.Modules
	}
	return out
}

// dropPins removes the VM's pins when it has no saved state: it boots
// cold, on this host's own disks.
func dropPins(vmDir string) error {
	if _, err := savestate.Of(vmDir).Load(); errors.Is(err, savestate.ErrNone) {
		return savestate.PinsOf(vmDir).Remove()
	}
	return nil
}

// kernelRelease names the kernel's module tree: its release, the name of
// the directory (/lib/modules/RELEASE, or the kernel cache's
// RELEASE/modules).
func kernelRelease(kern guest.Kernel) string {
	if base := filepath.Base(kern.Modules); base != "modules" {
		return base
	}
	return filepath.Base(filepath.Dir(kern.Modules))
}
