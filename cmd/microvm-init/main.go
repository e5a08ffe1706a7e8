// Command microvm-init is PID 1 inside every microvm guest. Built static
// (CGO_ENABLED=0), it is the initramfs's /init: it mounts the early
// filesystems, loads the kernel modules the host chose, configures the NIC
// found by MAC, mounts the store share read-only and builds the root as an
// overlay (image lower, tmpfs upper) with an ephemeral /var, mounts each data
// volume found by its virtio serial, serves SSH (shell with a PTY, exec,
// SFTP) with the configured keys, runs the workload, prints a ready line on
// the console and, on Ctrl-Alt-Del or the power button, stops everything,
// unmounts the volumes cleanly and powers off.
//
// Run as anything but PID 1 it only serves SFTP on its standard streams
// ("microvm-init sftp-server"), which the SSH server uses inside the root,
// or reports the facts `microvm verify` checks ("microvm-init probe").
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/guestroot"
)

func main() {
	if filepath.Base(os.Args[0]) == "modprobe" {
		os.Exit(modprobe(os.Args[1:]))
	}
	if os.Getpid() != 1 {
		if len(os.Args) == 2 && os.Args[1] == "sftp-server" {
			if err := serveSFTP(); err != nil {
				fmt.Fprintln(os.Stderr, "sftp-server:", err)
				os.Exit(1)
			}
			return
		}
		if len(os.Args) == 2 && os.Args[1] == "agent" {
			if err := runAgent(); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			return
		}
		if len(os.Args) == 3 && os.Args[1] == "clock" {
			if err := setClock(os.Args[2]); err != nil {
				fmt.Fprintln(os.Stderr, "clock:", err)
				os.Exit(1)
			}
			return
		}
		if len(os.Args) >= 3 && os.Args[1] == "authorize" {
			if err := authorize(os.Args[2:]); err != nil {
				fmt.Fprintln(os.Stderr, "authorize:", err)
				os.Exit(1)
			}
			return
		}
		if len(os.Args) == 3 && os.Args[1] == "template" {
			if err := prepareTemplate(os.Args[2]); err != nil {
				fmt.Fprintln(os.Stderr, "template:", err)
				os.Exit(1)
			}
			return
		}
		if len(os.Args) == 5 && os.Args[1] == "identity-watch" {
			if err := watchIdentity(os.Args[2], os.Args[3], os.Args[4]); err != nil {
				fmt.Fprintln(os.Stderr, "identity-watch:", err)
				os.Exit(1)
			}
			return
		}
		if len(os.Args) >= 2 && os.Args[1] == "probe" {
			if err := probe(os.Args[2:]); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			return
		}
		fmt.Fprintln(os.Stderr, "microvm-init runs as PID 1 inside a microvm guest")
		os.Exit(2)
	}
	in := &initd{root: newRoot, procs: newReaper(), shutdownReq: make(chan string, 4)}
	if err := in.boot(); err != nil {
		name := "?"
		if in.spec != nil {
			name = in.spec.Name
		}
		logf("%s vm=%s error=%q", guest.FailedPrefix, name, err.Error())
		in.powerOff()
	}
	in.waitForShutdown()
}

// initd is the state of PID 1.
type initd struct {
	// root is the guest's root it assembles (newRoot).
	root     guestroot.Root
	spec     *guest.Spec
	procs    *reaper
	volumes  []string // mount points (in the init's view) to unmount at shutdown
	workload int      // pid of the workload, 0 if none
	// workloadExit is the workload's exit status plus one once it exited
	// (0 while it runs).
	workloadExit atomic.Int64
	stopping     atomic.Bool
	// consolePID is the console shell's pid (0 if none): an interactive
	// shell ignores SIGTERM, so shutdown hangs it up instead.
	consolePID atomic.Int64
	// shutdownReq carries why the VM is to shut down (the first is acted on).
	shutdownReq chan string
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stdout, "microvm-init: "+format+"\n", args...)
}

func (in *initd) boot() error {
	t := newPhases("early mounts")
	defer t.stop()
	if err := mountEarly(); err != nil {
		return err
	}
	// Ctrl-Alt-Del sends SIGINT to PID 1 instead of rebooting.
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF); err != nil {
		logf("cannot take over Ctrl-Alt-Del: %v", err)
	}
	in.procs.start()
	spec, err := guest.ReadSpec("/" + guest.SpecPath)
	if err != nil {
		return err
	}
	in.spec = spec
	var mods loading
	t.beginWaiting("modules", mods.String)
	loadModules("/"+guest.ModulesDepsPath, spec, &mods)
	t.begin("network")
	if err := unix.Sethostname([]byte(spec.Name)); err != nil {
		return fmt.Errorf("set hostname: %w", err)
	}
	if err := configureNetwork(spec.Net); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	t.begin("root")
	if err := buildRoot(in.root, spec); err != nil {
		return fmt.Errorf("root: %w", err)
	}
	t.begin("module tree")
	if err := mountModuleTree(in.root, spec.Modules); err != nil {
		return err
	}
	t.begin("volumes")
	for _, v := range spec.Volumes {
		mp, err := mountVolume(in.root, v)
		if err != nil {
			return fmt.Errorf("volume %s: %w", v.Name, err)
		}
		in.volumes = append(in.volumes, mp)
		if v.Populate {
			n, err := guestroot.Populate(filepath.Join(guest.StoreMount, spec.Store.Image, v.MountPoint), mp)
			if err != nil {
				return fmt.Errorf("volume %s: populate it from the image: %w", v.Name, err)
			}
			if n > 0 {
				logf("volume %s: new, populated with the image's %s (%d entries)", v.Name, v.MountPoint, n)
			}
		}
	}
	if err := in.root.WriteSecrets(spec.Secrets); err != nil {
		return err
	}
	if spec.SwitchRoot {
		t.finish()
		logf("boot: %s", t)
		return in.switchRoot()
	}
	t.begin("ssh and workload")
	if err := startSSH(spec.SSH, in.procs, in.root); err != nil {
		return fmt.Errorf("ssh: %w", err)
	}
	if spec.Workload != nil && len(spec.Workload.Command) > 0 {
		pid, err := in.startWorkload(spec.Workload)
		if err != nil {
			return fmt.Errorf("workload: %w", err)
		}
		in.workload = pid
		if err := in.root.WriteWorkloadPID(pid); err != nil {
			logf("record the workload's pid: %v", err)
		}
	}
	watchPowerButton(in.requestShutdown)
	t.finish()
	logf("boot: %s", t)
	fmt.Fprintf(os.Stdout, "%s vm=%s uptime=%s\n", guest.ReadyPrefix, spec.Name, uptime())
	in.serveConsole()
	return nil
}

// switchRoot makes the assembled root the real root and execs the image's
// init as PID 1 (what switch_root does), once the root is readied for it
// (prepareImageInit): from then on the image's init owns the console,
// services and shutdown, and microvm's agent runs as one of its services.
func (in *initd) switchRoot() error {
	initPath, err := in.root.FindInit()
	if err != nil {
		return err
	}
	if err := in.root.PrepareImageInit(in.spec, initPath, "/sys"); err != nil {
		return fmt.Errorf("init: image: %w", err)
	}
	unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_ON) // the image's init decides about Ctrl-Alt-Del
	signalReset()
	// The agent, run by the image's init, reports the VM ready once that
	// init has reached its target.
	logf("handing PID 1 to the image's %s", initPath)
	if err := unix.Chdir(string(in.root)); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("switch root: move %s to /: %w", in.root, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("switch root: chroot: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	env := []string{"PATH=" + guest.DefaultPath, "HOME=/", "TERM=linux"}
	return unix.Exec(initPath, []string{initPath}, env)
}

// uptime is the guest's uptime in seconds, as /proc/uptime says.
func uptime() string {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

// requestShutdown asks for a clean shutdown, saying why.
func (in *initd) requestShutdown(why string) {
	select {
	case in.shutdownReq <- why:
	default:
	}
}

// waitForShutdown blocks until Ctrl-Alt-Del, a power button press or a
// signal asks the VM to stop, then shuts down cleanly.
func (in *initd) waitForShutdown() {
	in.procs.onSignal(unix.SIGINT, func() { in.requestShutdown("ctrl-alt-del") })
	in.procs.onSignal(unix.SIGTERM, func() { in.requestShutdown("SIGTERM") })
	in.procs.onSignal(unix.SIGPWR, func() { in.requestShutdown("SIGPWR") })
	why := <-in.shutdownReq
	logf("shutting down (%s)", why)
	in.shutdown()
}

func (in *initd) shutdown() {
	in.stopping.Store(true)
	if pid := in.consolePID.Load(); pid > 0 {
		unix.Kill(-int(pid), unix.SIGHUP) // the console session's process group
		unix.Kill(int(pid), unix.SIGKILL)
	}
	in.stopWorkload(10 * time.Second)
	// Every other process but PID 1: SIGTERM and a grace period.
	unix.Kill(-1, unix.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && in.procs.running() > 0 {
		time.Sleep(50 * time.Millisecond)
	}
	unix.Kill(-1, unix.SIGKILL)
	time.Sleep(50 * time.Millisecond)
	unix.Sync()
	for i := len(in.volumes) - 1; i >= 0; i-- {
		if err := unix.Unmount(in.volumes[i], 0); err != nil {
			logf("unmount %s: %v; remounting read-only", in.volumes[i], err)
			unix.Mount("", in.volumes[i], "", unix.MS_REMOUNT|unix.MS_RDONLY, "")
		}
	}
	unix.Sync()
	logf("microvm-shutdown vm=%s volumes=%d", in.spec.Name, len(in.volumes))
	if code := in.workloadExit.Load(); code > 0 {
		fmt.Fprintln(os.Stdout, guest.ExitLine(in.spec.Name, int(code-1)))
	}
	in.powerOff()
}

// stopWorkload sends the workload its stop signal (the image's StopSignal,
// else SIGTERM) and waits up to grace for it to exit.
func (in *initd) stopWorkload(grace time.Duration) {
	if in.workload == 0 || in.workloadExit.Load() > 0 {
		return
	}
	sig := unix.SIGTERM
	if s := in.spec.Workload.StopSignal; s != "" {
		if parsed, err := guest.ParseSignal(s); err == nil {
			sig = parsed
		}
	}
	logf("stopping the workload with %s", unix.SignalName(sig))
	unix.Kill(in.workload, sig)
	for deadline := time.Now().Add(grace); time.Now().Before(deadline) && in.workloadExit.Load() == 0; {
		time.Sleep(20 * time.Millisecond)
	}
}

func (in *initd) powerOff() {
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// Not reached; if power-off failed, PID 1 must not exit (kernel panic).
	for {
		time.Sleep(time.Hour)
	}
}
