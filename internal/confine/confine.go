// Package confine shuts a hypervisor into a root of its own before it
// runs: a mount namespace whose root is an empty tmpfs holding only what
// the hypervisor opens (the system's programs and libraries read-only, a
// few device nodes, its VM's files), and a PID namespace in which it is
// process 1 and sees no other process. `microvm confine` (cmd/microvm) is
// its command: it runs as root, builds the root, pivots into it and execs
// the rest of its command line (setpriv, which drops to the VM's own
// uid with no capabilities, then the hypervisor).
//
// A supervisor starts the command in new mount and PID namespaces
// (SysProcAttr) so that the hypervisor keeps the process it started: its
// pid, its exit status and its signals are the hypervisor's own. Run by
// hand, the command makes the namespaces itself (Isolated, Run).
package confine

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Command is the subcommand of microvm that confines what follows it.
const Command = "confine"

// Spec is what a confined root holds besides the system's programs.
type Spec struct {
	// Root is an empty directory the new root is mounted on (created when
	// missing); it holds nothing on the host.
	Root string
	// ReadOnly and Writable are host paths (files or directories) bound at
	// the same path in the new root.
	ReadOnly, Writable []string
	// Devices are device nodes bound in, where the host has them.
	Devices []string
}

// System is what every confined hypervisor is given read-only: programs,
// libraries, firmware (under /usr on a merged-/usr system, where /bin,
// /lib… are links into it) and the dynamic linker's cache; /sys read-only
// for what the hypervisor reads about the host's CPUs and memory.
var System = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/ld.so.cache", "/sys"}

// BaseDevices are the device nodes every hypervisor may open.
var BaseDevices = []string{"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"}

// Args is the command line that confines argv as s says: self (the
// microvm binary) confine --root … --ro … --rw … --dev … -- argv….
func Args(self string, s Spec, argv []string) []string {
	out := []string{self, Command, "--root", s.Root}
	for _, p := range s.ReadOnly {
		out = append(out, "--ro", p)
	}
	for _, p := range s.Writable {
		out = append(out, "--rw", p)
	}
	for _, d := range s.Devices {
		out = append(out, "--dev", d)
	}
	return append(append(out, "--"), argv...)
}

// Parse reads the arguments after `confine` back into a Spec and the
// command to run.
func Parse(args []string) (Spec, []string, error) {
	var s Spec
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			if i+1 == len(args) {
				return s, nil, errors.New("confine: no command after --")
			}
			if s.Root == "" {
				return s, nil, errors.New("confine: --root is required")
			}
			return s, args[i+1:], nil
		}
		if i+1 == len(args) {
			return s, nil, fmt.Errorf("confine: %s needs a value", a)
		}
		v := args[i+1]
		i++
		if !filepath.IsAbs(v) {
			return s, nil, fmt.Errorf("confine: %s %s: the path must be absolute", a, v)
		}
		switch a {
		case "--root":
			s.Root = v
		case "--ro":
			s.ReadOnly = append(s.ReadOnly, v)
		case "--rw":
			s.Writable = append(s.Writable, v)
		case "--dev":
			s.Devices = append(s.Devices, v)
		default:
			return s, nil, fmt.Errorf("confine: unknown flag %s", a)
		}
	}
	return s, nil, errors.New("confine: no -- before the command")
}

// SysProcAttr gives a process new mount and PID namespaces from its start,
// as the command expects from a supervisor.
func SysProcAttr(a *syscall.SysProcAttr) {
	a.Cloneflags |= unix.CLONE_NEWNS | unix.CLONE_NEWPID
}

// Isolated says whether this process already runs as process 1 of its own
// PID namespace (started with SysProcAttr), where it may build the root.
func Isolated() bool { return os.Getpid() == 1 }

// Run starts this same command line again in new namespaces (for the
// command run by hand), forwards the signals a supervisor sends, and
// returns its exit status.
func Run() (int, error) {
	self, err := os.Executable()
	if err != nil {
		return 1, err
	}
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	SysProcAttr(cmd.SysProcAttr)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT)
	if err := cmd.Start(); err != nil {
		return 1, fmt.Errorf("confine: new mount and PID namespaces: %w", err)
	}
	go func() {
		for s := range sigs {
			cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	return 0, err
}

// Enter builds s's root and makes it this process's root (pivot_root);
// the process must be Isolated. What it binds is created in the new root
// at the same path; a system path or device the host lacks is skipped, a
// VM's path that is missing is an error.
func Enter(s Spec) error {
	if !Isolated() {
		return errors.New("confine: not process 1 of a PID namespace of its own")
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("confine: make mounts private: %w", err)
	}
	if err := os.MkdirAll(s.Root, 0o700); err != nil {
		return fmt.Errorf("confine: %w", err)
	}
	if err := unix.Mount("tmpfs", s.Root, "tmpfs", unix.MS_NOSUID, "mode=0755,size=1m"); err != nil {
		return fmt.Errorf("confine: mount the new root on %s: %w", s.Root, err)
	}
	// First: what is bound may lie below /tmp (a state directory there).
	for _, m := range []struct{ target, fstype, data string }{
		{"/proc", "proc", ""},
		{"/tmp", "tmpfs", "mode=1777,size=16m"},
	} {
		t := filepath.Join(s.Root, m.target)
		if err := os.MkdirAll(t, 0o755); err != nil {
			return fmt.Errorf("confine: %w", err)
		}
		if err := unix.Mount(m.fstype, t, m.fstype, unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, m.data); err != nil {
			return fmt.Errorf("confine: mount %s: %w", m.target, err)
		}
	}
	type bind struct {
		path     string
		writable bool
		optional bool
		device   bool
		system   bool // a link is copied as a link (/lib -> usr/lib)
	}
	var binds []bind
	for _, p := range System {
		binds = append(binds, bind{path: p, optional: true, system: true})
	}
	for _, p := range s.ReadOnly {
		binds = append(binds, bind{path: p})
	}
	for _, p := range s.Writable {
		binds = append(binds, bind{path: p, writable: true})
	}
	for _, d := range append(append([]string(nil), BaseDevices...), s.Devices...) {
		binds = append(binds, bind{path: d, writable: true, optional: true, device: true})
	}
	// Parents before what lies inside them.
	sort.SliceStable(binds, func(i, j int) bool { return depth(binds[i].path) < depth(binds[j].path) })
	for _, b := range binds {
		flags := uintptr(unix.MS_NOSUID)
		if !b.device {
			flags |= unix.MS_NODEV
		}
		if !b.writable {
			flags |= unix.MS_RDONLY
		}
		if err := bindIn(s.Root, b.path, flags, b.system); err != nil {
			if b.optional && errors.Is(err, os.ErrNotExist) {
				continue
			}
			return fmt.Errorf("confine: %w", err)
		}
	}
	return pivot(s.Root)
}

func depth(p string) int { return strings.Count(filepath.Clean(p), "/") }

// bindIn binds host path p at the same path under root with flags
// (MS_RDONLY, MS_NOSUID, MS_NODEV). With links, a symbolic link is copied
// as a link (the system's merged-/usr links); else what it points to is
// bound (a kernel at /boot/vmlinuz).
func bindIn(root, p string, flags uintptr, links bool) error {
	stat := os.Stat
	if links {
		stat = os.Lstat
	}
	fi, err := stat(p)
	if err != nil {
		return err
	}
	t := filepath.Join(root, p)
	if err := os.MkdirAll(filepath.Dir(t), 0o755); err != nil {
		return err
	}
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		dest, err := os.Readlink(p)
		if err != nil {
			return err
		}
		if _, err := os.Lstat(t); err == nil {
			return nil // already there (a link inside a bound tree)
		}
		return os.Symlink(dest, t)
	case fi.IsDir():
		if err := os.MkdirAll(t, 0o755); err != nil {
			return err
		}
	default:
		f, err := os.OpenFile(t, os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		f.Close()
	}
	// Not recursive: what is mounted below p (sysfs's own mounts) stays out.
	if err := unix.Mount(p, t, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s: %w", p, err)
	}
	// A bind takes its flags only on a remount.
	if err := unix.Mount("", t, "", unix.MS_REMOUNT|unix.MS_BIND|flags, ""); err != nil {
		return fmt.Errorf("bind %s: remount: %w", p, err)
	}
	return nil
}

// pivot makes root the process's root, with the old one detached, and the
// new root itself read-only.
func pivot(root string) error {
	if err := unix.Chdir(root); err != nil {
		return fmt.Errorf("confine: %w", err)
	}
	// Stacked on the old root, which is then detached (as runc does).
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("confine: pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("confine: detach the old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("confine: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID, ""); err != nil {
		return fmt.Errorf("confine: make the new root read-only: %w", err)
	}
	return nil
}
