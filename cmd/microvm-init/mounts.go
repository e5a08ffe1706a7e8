package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/guestroot"
)

// newRoot is where PID 1 assembles the guest's root; sessions and the
// workload run chrooted into it. The agent (run by the image's own init,
// inside the real root) uses "": no chroot.
const newRoot guestroot.Root = "/newroot"

type mountSpec struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

func mountAll(ms []mountSpec) error {
	for _, m := range ms {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	return nil
}

func mountEarly() error {
	return mountAll([]mountSpec{
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "mode=0620,ptmxmode=0666"},
		{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	})
}

// loadModules loads the modules this VM needs (guest.NeededModules) with
// their dependencies, wave by wave: the modules of a wave depend only on
// earlier waves, so they load at once, on as many vCPUs as the guest has.
// A module that fails is logged and skipped (its devices will then be
// missing, which later steps report precisely).
func loadModules(depsFile string, spec *guest.Spec, now *loading) {
	list, err := os.ReadFile(depsFile)
	if err != nil {
		logf("no module list: %v", err)
		return
	}
	for _, wave := range guest.ModulePlan(string(list), guest.NeededModules(spec)) {
		var wg sync.WaitGroup
		for _, path := range wave {
			wg.Add(1)
			go func() {
				defer wg.Done()
				now.add(path)
				defer now.remove(path)
				loadModule(path)
			}()
		}
		wg.Wait()
	}
}

// loading is the set of modules being loaded, for the boot's stall
// report.
type loading struct {
	mu    sync.Mutex
	paths map[string]bool
}

func (l *loading) add(path string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.paths == nil {
		l.paths = map[string]bool{}
	}
	l.paths[path] = true
}

func (l *loading) remove(path string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.paths, path)
}

// String names the modules being loaded, sorted.
func (l *loading) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var names []string
	for p := range l.paths {
		names = append(names, strings.TrimSuffix(filepath.Base(p), ".ko"))
	}
	sort.Strings(names)
	return strings.Join(names, " ")
}

func loadModule(path string) {
	if err := insmod(path, ""); err != nil {
		logf("load %s: %v", filepath.Base(path), err)
	}
}

// buildRoot mounts the store share read-only, the root overlay on it and the
// guest's pseudo and ephemeral filesystems.
func buildRoot(root guestroot.Root, spec *guest.Spec) error {
	st := spec.Store
	var storeMount mountSpec
	switch st.FSType {
	case "virtiofs":
		storeMount = mountSpec{st.Tag, guest.StoreMount, "virtiofs", unix.MS_RDONLY | unix.MS_NODEV | unix.MS_NOSUID, ""}
	case "9p", "":
		storeMount = mountSpec{st.Tag, guest.StoreMount, "9p", unix.MS_RDONLY | unix.MS_NODEV | unix.MS_NOSUID,
			"trans=virtio,version=9p2000.L,msize=512000,cache=loose"}
	case "ext4":
		dev, err := findDisk(st.Serial, st.Device, 10*time.Second)
		if err != nil {
			return fmt.Errorf("store disk: %w", err)
		}
		// noload: never replay a journal on a disk that is read-only.
		storeMount = mountSpec{dev, guest.StoreMount, "ext4", unix.MS_RDONLY | unix.MS_NODEV | unix.MS_NOSUID, "noload"}
	default:
		return fmt.Errorf("unknown store filesystem %q", st.FSType)
	}
	lower := filepath.Join(guest.StoreMount, st.Image)
	if err := mountAll([]mountSpec{
		storeMount,
		{"tmpfs", "/run/microvm/rw", "tmpfs", unix.MS_NODEV, "mode=0755"},
	}); err != nil {
		return err
	}
	for _, d := range []string{"/run/microvm/rw/upper", "/run/microvm/rw/work"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := mountAll([]mountSpec{
		{"overlay", string(root), "overlay", 0, "lowerdir=" + lower + ",upperdir=/run/microvm/rw/upper,workdir=/run/microvm/rw/work"},
	}); err != nil {
		return err
	}
	if err := mountAll([]mountSpec{
		{"proc", root.Path("/proc"), "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", root.Path("/sys"), "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"/dev", root.Path("/dev"), "", unix.MS_BIND | unix.MS_REC, ""},
		// cgroup2, as a container runtime gives its workload (and systemd
		// needs); /dev/mqueue for POSIX message queues.
		{"cgroup2", root.Path("/sys/fs/cgroup"), "cgroup2", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"mqueue", root.Path("/dev/mqueue"), "mqueue", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		// /var is the image's own, reset at every boot like the rest of the
		// root (the overlay's upper layer is in memory); /run and /tmp
		// start empty.
		{"tmpfs", root.Path("/run"), "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
		{"tmpfs", root.Path("/tmp"), "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		// The store stays visible, read-only, inside the guest.
		{guest.StoreMount, root.Path(guest.StoreMount), "", unix.MS_BIND, ""},
	}); err != nil {
		return err
	}
	if err := unix.Mount("", root.Path(guest.StoreMount), "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("make the store read-only in the root: %w", err)
	}
	// The init binary, for the SFTP server that runs inside the root.
	initInRoot := root.Path("/run/microvm/init")
	if err := os.WriteFile(initInRoot, nil, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("/init", initInRoot, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind /init into the root: %w", err)
	}
	for _, d := range []string{"/var/log", "/var/lib", "/root", "/etc"} {
		os.MkdirAll(root.Path(d), 0o755)
	}
	if fi, err := os.Stat(root.Path("/var/tmp")); err != nil || !fi.IsDir() {
		os.MkdirAll(root.Path("/var/tmp"), 0o1777)
		os.Chmod(root.Path("/var/tmp"), 0o1777)
	}
	return root.WriteIdentity(spec)
}

// mountVolume finds the virtio disk whose serial is the volume's name and
// mounts it (ext4) at its mount point inside the root.
func mountVolume(root guestroot.Root, v guest.VolumeSpec) (string, error) {
	dev, err := findDisk(v.Name, v.Device, 10*time.Second)
	if err != nil {
		return "", err
	}
	target := root.Path(filepath.Join("/", v.MountPoint))
	if err := os.MkdirAll(target, 0o755); err != nil {
		return "", err
	}
	if err := unix.Mount(dev, target, "ext4", unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
		return "", fmt.Errorf("mount %s (ext4) on %s: %w", dev, v.MountPoint, err)
	}
	return target, nil
}

// findDisk waits for the virtio disk named device (when given) or carrying
// serial, and returns its /dev path.
func findDisk(serial, device string, wait time.Duration) (string, error) {
	deadline := time.Now().Add(wait)
	for device != "" {
		if _, err := os.Stat("/sys/block/" + device); err == nil {
			return "/dev/" + device, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("disk %s (%s) did not appear", device, serial)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for {
		disks, _ := filepath.Glob("/sys/block/vd*")
		for _, d := range disks {
			b, err := os.ReadFile(filepath.Join(d, "serial"))
			if err == nil && strings.TrimSpace(string(b)) == serial {
				return "/dev/" + filepath.Base(d), nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no virtio disk with serial %q appeared (disks: %v)", serial, disks)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
