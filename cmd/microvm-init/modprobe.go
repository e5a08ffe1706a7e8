package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/guestroot"
)

// kernelModprobe is where the kernel runs modprobe to load a module it
// needs (its default modprobe_path): in the initramfs's root, where
// microvm-init stays PID 1 under init: microvm, it is a link to /init.
const kernelModprobe = "/sbin/modprobe"

// mountModuleTree mounts the disk of the kernel's own module tree
// read-only and binds it into the root at /lib/modules/$(uname -r)
// (following the image's /lib → usr/lib link, merged /usr), beside any
// modules the image has for other kernels; and makes microvm-init the
// kernel's modprobe in the initramfs. A missing disk is an error: every
// VM is given one.
func mountModuleTree(root guestroot.Root, d *guest.DiskSpec) error {
	if d == nil {
		return nil
	}
	dev, err := findDisk(d.Serial, d.Device, 10*time.Second)
	if err != nil {
		return fmt.Errorf("kernel modules disk: %w", err)
	}
	if err := mountAll([]mountSpec{{dev, guest.ModulesMount, "ext4", unix.MS_RDONLY | unix.MS_NODEV | unix.MS_NOSUID, "noload"}}); err != nil {
		return fmt.Errorf("kernel modules disk: %w", err)
	}
	rel := release()
	target, err := guest.ResolveInToCreate(string(root), "/lib/modules/"+rel)
	if err != nil {
		return fmt.Errorf("kernel modules: /lib/modules/%s in the image: %w", rel, err)
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("kernel modules: %w", err)
	}
	if err := unix.Mount(guest.ModulesMount, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("kernel modules: bind on %s: %w", strings.TrimPrefix(target, string(root)), err)
	}
	if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
		return fmt.Errorf("kernel modules: read-only bind: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(kernelModprobe), 0o755); err != nil {
		return err
	}
	if err := os.Symlink("/init", kernelModprobe); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("kernel modules: %w", err)
	}
	return nil
}

// release is the running kernel's release (uname -r).
func release() string {
	rel, err := guest.RunningRelease()
	if err != nil {
		return "unknown"
	}
	return rel
}

// modprobe is microvm-init run as the kernel's modprobe ("modprobe -q --
// NAME" for a module the kernel needs, such as rtnl-link-wireguard for
// ip link add … type wireguard): it loads the module and what it needs
// from the kernel's module tree, with modprobe's own messages and exit
// status. It takes modprobe's common form only: [-q] [-v] [--] NAME
// [PARAM=VALUE…].
func modprobe(args []string) int {
	quiet, verbose := false, false
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		opt := args[0]
		args = args[1:]
		if opt == "--" {
			break
		}
		// Other options (-b, -s, …) change nothing here.
		quiet = quiet || opt == "-q" || opt == "--quiet"
		verbose = verbose || opt == "-v" || opt == "--verbose"
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "modprobe: ERROR: missing module name")
		return 1
	}
	name, params := args[0], strings.Join(args[1:], " ")
	files, err := guest.ModprobePlan(guest.ModulesMount, name)
	if err != nil {
		if !quiet {
			if errors.Is(err, guest.ErrNoModule) {
				fmt.Fprintf(os.Stderr, "modprobe: FATAL: Module %s not found in directory /lib/modules/%s\n", name, release())
			} else {
				fmt.Fprintf(os.Stderr, "modprobe: FATAL: %v\n", err)
			}
		}
		return 1
	}
	for i, f := range files {
		p := ""
		if i == len(files)-1 {
			p = params
		}
		if verbose {
			fmt.Fprintf(os.Stderr, "insmod %s %s\n", f, p)
		}
		if err := insmod(f, p); err != nil {
			if !quiet {
				fmt.Fprintf(os.Stderr, "modprobe: ERROR: could not insert '%s': %v\n", strings.TrimSuffix(filepath.Base(f), ".ko"), err)
			}
			return 1
		}
	}
	return 0
}

// insmod loads one module file with its parameters; one already loaded
// is fine.
func insmod(path, params string) error {
	var err error
	if strings.HasSuffix(path, ".ko") {
		f, oerr := os.Open(path)
		if oerr != nil {
			return oerr
		}
		err = unix.FinitModule(int(f.Fd()), params, 0)
		f.Close()
	} else {
		data, rerr := guest.ReadModule(path)
		if rerr != nil {
			return rerr
		}
		err = unix.InitModule(data, params)
	}
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}
