package main

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

// lab is a throwaway state directory sharing the given store, and a
// network namespace holding the file's host network.
type lab struct {
	env    launch.Env
	cfg    *config.Config
	nsPath string
	close  func()
}

func newLab(store, initDir, file string) (*lab, error) {
	if store == "" {
		return nil, fmt.Errorf("-store is required (build one with scripts/build-base-image.sh DIR/base)")
	}
	st, err := os.MkdirTemp("", "bootbench-")
	if err != nil {
		return nil, err
	}
	var undo []func()
	l := &lab{close: func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}}
	undo = append(undo, func() { os.RemoveAll(st) })
	fail := func(err error) (*lab, error) { l.close(); return nil, err }
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
	nsName := fmt.Sprintf("bootbench%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", nsName).CombinedOutput(); err != nil {
		return fail(fmt.Errorf("ip netns add: %v: %s", err, out))
	}
	undo = append(undo, func() { exec.Command("ip", "netns", "del", nsName).Run() })
	l.nsPath = "/run/netns/" + nsName
	if l.cfg, err = config.Parse("bench.yaml", []byte(file), config.Options{}); err != nil {
		return fail(err)
	}
	m, err := network.New(l.nsPath, hostnet.Options{})
	if err != nil {
		return fail(err)
	}
	undo = append(undo, func() { m.Close() })
	if _, err := m.Apply(l.cfg); err != nil {
		return fail(err)
	}
	l.env = launch.Env{StateDir: st, RunDir: filepath.Join(st, "run"), KernelCache: guest.DefaultKernelCache, InitDir: initDir, NetNS: l.nsPath}
	return l, nil
}

func dirExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}
