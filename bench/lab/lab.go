// Package lab is the benchmark programs' world: the real microvm daemon
// (Lab: a state directory of its own, the given store linked in and
// reachable by the unprivileged hypervisors, a throwaway network namespace
// for the VMs' networks, the daemon started and waited for, the command
// line against it), or, for the programs that launch VMs themselves, a
// state directory and a namespace holding a file's network (Launch).
package lab

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"time"
)

// Lab is one daemon's world.
type Lab struct {
	// Bin holds microvm and microvm-init; State is the state directory.
	Bin, State string
	// Socket is the daemon's API socket; NS names its namespace.
	Socket, NS string
	daemon     *exec.Cmd
}

// New makes the state directory (linking store, a directory holding
// base/) and the namespace; name prefixes both.
func New(name, bin, store string) (*Lab, error) {
	bin, _ = filepath.Abs(bin)
	store, _ = filepath.Abs(store)
	st, err := os.MkdirTemp("", name+"-")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(st, 0o711); err != nil {
		os.RemoveAll(st)
		return nil, err
	}
	if err := os.Symlink(store, filepath.Join(st, "store")); err != nil {
		os.RemoveAll(st)
		return nil, err
	}
	l := &Lab{Bin: bin, State: st, Socket: filepath.Join(st, "run", "microvm.sock"), NS: fmt.Sprintf("%s%d", name, os.Getpid())}
	if out, err := exec.Command("ip", "netns", "add", l.NS).CombinedOutput(); err != nil {
		os.RemoveAll(st)
		return nil, fmt.Errorf("ip netns add %s: %v: %s", l.NS, err, out)
	}
	return l, nil
}

func (l *Lab) base() []string {
	return []string{"--state-dir", l.State, "--socket", l.Socket, "--netns", "/run/netns/" + l.NS}
}

// StartDaemon starts `microvm daemon args…` (its log in the state
// directory) and waits until it answers on its socket.
func (l *Lab) StartDaemon(args ...string) error {
	l.daemon = exec.Command(filepath.Join(l.Bin, "microvm"), append(append(l.base(), "daemon"), args...)...)
	logf, err := os.Create(filepath.Join(l.State, "daemon.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	l.daemon.Stdout, l.daemon.Stderr = logf, logf
	l.daemon.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := l.daemon.Start(); err != nil {
		return err
	}
	for range 200 {
		if c, err := net.Dial("unix", l.Socket); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("the daemon did not listen on %s", l.Socket)
}

// PID is the daemon's process.
func (l *Lab) PID() int { return l.daemon.Process.Pid }

// CLI runs microvm args… against the daemon.
func (l *Lab) CLI(args ...string) ([]byte, error) {
	return exec.Command(filepath.Join(l.Bin, "microvm"), append(l.base(), args...)...).CombinedOutput()
}

// Close stops every VM (an empty file applied, then any left killed),
// then the daemon, and removes the namespace and the state directory.
func (l *Lab) Close() {
	if l.daemon != nil {
		empty := filepath.Join(l.State, "empty.yaml")
		os.WriteFile(empty, []byte("vms: {}\n"), 0o644)
		l.CLI("apply", "-f", empty)
		l.daemon.Process.Kill()
		l.daemon.Wait()
	}
	// Whatever still runs of this lab (a VM put through the API, which
	// an empty file leaves): every command line of it names the state
	// directory.
	exec.Command("pkill", "-9", "-f", l.State).Run()
	exec.Command("ip", "netns", "del", l.NS).Run()
	os.RemoveAll(l.State)
}

// Median is the middle of xs (the upper one of an even count); xs is not
// reordered.
func Median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
