package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/hostnet"
	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/network"
)

// Launch is a throwaway state directory sharing a store, and a network
// namespace holding a file's host network, for the benchmarks that launch
// VMs themselves (launch.Prepare and Start) rather than through the daemon.
type Launch struct {
	// Env launches VMs in the namespace (as root), with microvm-init from
	// the init directory given and Debian's kernel from the kernel cache.
	Env launch.Env
	// Config is the file, NetNS the namespace's path.
	Config *config.Config
	NetNS  string
	// Close removes the namespace and the state directory.
	Close func()
}

// NewLaunch makes a Launch lab called name: store is a directory holding
// base/ (its images/ beside it is linked too).
func NewLaunch(name, store, initDir, file string) (*Launch, error) {
	if store == "" {
		return nil, fmt.Errorf("-store is required (build one with scripts/build-base-image.sh DIR/base)")
	}
	st, err := os.MkdirTemp("", name+"-")
	if err != nil {
		return nil, err
	}
	var undo []func()
	l := &Launch{Close: func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}}
	undo = append(undo, func() { os.RemoveAll(st) })
	fail := func(err error) (*Launch, error) { l.Close(); return nil, err }
	abs, _ := filepath.Abs(store)
	if err := os.Symlink(abs, filepath.Join(st, "store")); err != nil {
		return fail(err)
	}
	// Image names live beside the store in its state directory.
	if images := filepath.Join(filepath.Dir(abs), "images"); dirExists(images) {
		if err := os.Symlink(images, filepath.Join(st, "images")); err != nil {
			return fail(err)
		}
	}
	if err := os.Chmod(st, 0o711); err != nil {
		return fail(err)
	}
	nsName := fmt.Sprintf("%s%d", name, os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", nsName).CombinedOutput(); err != nil {
		return fail(fmt.Errorf("ip netns add: %v: %s", err, out))
	}
	undo = append(undo, func() { exec.Command("ip", "netns", "del", nsName).Run() })
	l.NetNS = "/run/netns/" + nsName
	if l.Config, err = config.Parse("bench.yaml", []byte(file), config.Options{}); err != nil {
		return fail(err)
	}
	m, err := network.New(l.NetNS, hostnet.Options{})
	if err != nil {
		return fail(err)
	}
	undo = append(undo, func() { m.Close() })
	if _, err := m.Apply(l.Config); err != nil {
		return fail(err)
	}
	l.Env = launch.Env{StateDir: st, RunDir: filepath.Join(st, "run"), KernelCache: guest.DefaultKernelCache, InitDir: initDir, NetNS: l.NetNS}
	return l, nil
}

func dirExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}
