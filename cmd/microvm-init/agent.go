package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"microvm.dev/microvm/internal/guestagent"
	"microvm.dev/microvm/internal/guestroot"
)

// readyMark is made once the agent has reported the VM ready in this boot,
// so an agent restarted by its init does not report it again.
const readyMark = "/run/microvm/ready-reported"

// runAgent is "microvm-init agent": run by an image's own init (init:
// image) as one of its services, inside the real root. It serves microvm's
// SSH (so microvm exec, ssh, verify and the VM's sshKeys work on any image),
// turns a press of the power button into the image's own clean poweroff,
// and reports the VM ready on the console once the init has reached its
// target (systemd: is-system-running says running or degraded, with the
// failed units named).
func runAgent() error {
	var root guestroot.Root // already inside the VM's root: no chroot
	b, err := os.ReadFile(guestroot.AgentSpecPath)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	var spec guestroot.AgentSpec
	if err := json.Unmarshal(b, &spec); err != nil {
		return fmt.Errorf("agent: %s: %w", guestroot.AgentSpecPath, err)
	}
	procs := newReaper()
	procs.start()
	procs.onSignal(unix.SIGTERM, func() { os.Exit(0) })
	if err := startSSH(spec.SSH, procs, root); err != nil {
		return fmt.Errorf("agent: ssh: %w", err)
	}
	watchPowerButton(func(string) { poweroff(procs, root) })
	if _, err := os.Stat(readyMark); err != nil {
		state, failed := initState(procs, root)
		if err := toConsole(guestagent.ReadyLine(spec.Name, uptime(), initName(), state, failed)); err != nil {
			return fmt.Errorf("agent: report ready: %w", err)
		}
		os.WriteFile(readyMark, nil, 0o600)
	}
	select {}
}

// initName is PID 1's command name.
func initName() string {
	b, _ := os.ReadFile("/proc/1/comm")
	return strings.TrimSpace(string(b))
}

// initState waits for the image's init to finish starting and says how it
// went: for systemd its system state (running, degraded, …) and failed
// units; an inittab init has run its boot scripts before it starts the
// agent, so it is running.
func initState(procs *reaper, root guestroot.Root) (string, []string) {
	if initName() != "systemd" {
		return "running", nil
	}
	state := strings.TrimSpace(output(procs, root, "systemctl", "is-system-running", "--wait"))
	if state == "" {
		state = "unknown"
	}
	var failed []string
	if state != "running" {
		failed = guestagent.FailedUnits(output(procs, root, "systemctl", "list-units", "--state=failed", "--plain", "--no-legend", "--no-pager"))
	}
	return state, failed
}

// output runs argv and returns its standard output. The reaper owns every
// child's exit status, so the command is waited for through it (never
// exec.Cmd.Wait), its output read from a pipe of its own.
func output(procs *reaper, root guestroot.Root, argv ...string) string {
	r, w, err := os.Pipe()
	if err != nil {
		return ""
	}
	defer r.Close()
	cmd := &exec.Cmd{Path: root.LookPath(argv[0]), Args: argv, Stdout: w}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return ""
	}
	done := procs.wait(cmd.Process.Pid)
	b, _ := io.ReadAll(r)
	<-done
	return string(b)
}

// toConsole writes line on the kernel's console, where the host watches.
func toConsole(line string) error {
	f, err := os.OpenFile("/dev/console", os.O_WRONLY|unix.O_NOCTTY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = fmt.Fprintf(f, "\r\n%s\r\n", line)
	return err
}

// poweroff asks the image's init for a clean poweroff with its own tool.
func poweroff(procs *reaper, root guestroot.Root) {
	if p := root.LookPath("poweroff"); p != "poweroff" {
		cmd := &exec.Cmd{Path: p, Args: []string{p}}
		if err := cmd.Start(); err == nil {
			procs.wait(cmd.Process.Pid)
			return
		}
	}
	// No poweroff tool: the init's own request (busybox init: SIGUSR2,
	// sysvinit and systemd take SIGINT as Ctrl-Alt-Del, which is mapped
	// to poweroff).
	unix.Kill(1, unix.SIGINT)
	time.Sleep(time.Second)
	unix.Kill(1, unix.SIGUSR2)
}
