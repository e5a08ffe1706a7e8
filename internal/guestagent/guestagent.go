// Package guestagent holds what microvm-init decides as the VM's agent
// and PID 1 without touching the machine: which command an SSH request
// runs, how a process's end is described, the ready line the agent of an
// image's own init reports. microvm-init (cmd/microvm-init) does the
// rest: it serves, runs and reports.
package guestagent

import (
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"microvm.dev/microvm/internal/guest"
)

// SFTPServer is the command that serves an SSH session's "sftp"
// subsystem: microvm-init itself, bound into the root.
var SFTPServer = []string{"/run/microvm/init", "sftp-server"}

// SessionCommand is the command an SSH session request (its type and
// payload) runs in the root: a login shell for "shell", the command
// through /bin/sh -c for "exec", the SFTP server for the "sftp"
// subsystem. Any other subsystem, or a payload that does not decode, is
// an error.
func SessionCommand(reqType string, payload []byte) ([]string, error) {
	switch reqType {
	case "shell":
		return []string{"/bin/sh", "-l"}, nil
	case "exec":
		var p struct{ Command string }
		if err := ssh.Unmarshal(payload, &p); err != nil {
			return nil, fmt.Errorf("exec request: %w", err)
		}
		return []string{"/bin/sh", "-c", p.Command}, nil
	case "subsystem":
		var p struct{ Name string }
		if err := ssh.Unmarshal(payload, &p); err != nil {
			return nil, fmt.Errorf("subsystem request: %w", err)
		}
		if p.Name != "sftp" {
			return nil, fmt.Errorf("unknown subsystem %q", p.Name)
		}
		return append([]string(nil), SFTPServer...), nil
	}
	return nil, fmt.Errorf("unknown session request %q", reqType)
}

// DescribeExit says how a process ended: "status N" or "signal NAME".
func DescribeExit(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "signal " + ws.Signal().String()
	}
	return fmt.Sprintf("status %d", ws.ExitStatus())
}

// ExitCode is a process's end as a shell's exit code: its status, or
// 128 + the signal that killed it.
func ExitCode(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// ReadyLine is the line the agent of an image's own init writes on the
// console once that init (init, PID 1's name) has come up: its state
// (systemd's is-system-running: running, degraded, …) and the units that
// failed.
func ReadyLine(vm, uptime, init, state string, failed []string) string {
	line := fmt.Sprintf("%s vm=%s uptime=%s init=%s state=%s", guest.ReadyPrefix, vm, uptime, init, state)
	if len(failed) > 0 {
		line += " failed=" + strings.Join(failed, ",")
	}
	return line
}

// FailedUnits are the unit names of `systemctl list-units --state=failed
// --plain --no-legend` output.
func FailedUnits(out string) []string {
	var failed []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			failed = append(failed, f[0])
		}
	}
	return failed
}
