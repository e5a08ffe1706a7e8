package launch

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/state"
	"microvm.dev/microvm/internal/steps"
)

// ProcStartTime is the start time of pid in clock ticks since boot (field 22
// of /proc/PID/stat); with the pid it identifies a process across pid reuse.
func ProcStartTime(pid int) (uint64, error) {
	f, err := procStat(pid)
	if err != nil {
		return 0, err
	}
	if len(f) < 20 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// procStat is /proc/PID/stat's fields after the command name (field 3,
// the state, first).
func procStat(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	// The command name (field 2) may hold spaces; fields resume after ")".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("unreadable /proc/%d/stat", pid)
	}
	return strings.Fields(string(b[i+1:])), nil
}

// running says whether pid is a live process (an exited one not yet reaped
// holds no file locks any more).
func running(pid int) bool {
	f, err := procStat(pid)
	return err == nil && len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// Alive says whether rec's recorded hypervisor still runs: the same pid
// with the same start time (a reused pid is another process).
func Alive(rec state.RunRecord) bool {
	st, err := ProcStartTime(rec.PID)
	return rec.PID != 0 && err == nil && st == rec.ProcStart
}

// ErrNotOurs says a recorded pid no longer runs the VM (it exited, or the
// pid was reused by another process).
var ErrNotOurs = errors.New("the recorded process is not this VM's hypervisor")

// Adopt takes over a hypervisor started earlier (by a daemon that has since
// restarted): it checks that pid still is vm's hypervisor (same start time,
// command line naming the VM's control socket, which is unique to it) and
// watches it through a pidfd.
func Adopt(env Env, vm *config.VM, pid int, startTime uint64) (*Running, error) {
	st, err := ProcStartTime(pid)
	if err != nil || st != startTime {
		return nil, ErrNotOurs
	}
	// The image may have left the store since (gc): adoption needs only
	// the VM's sockets and backend, so a placeholder serves.
	img, err := lookupImage(env, vm)
	if err != nil {
		return nil, err
	}
	res, err := Resolve(env, vm, img)
	if err != nil {
		return nil, err
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(cmdline, []byte(res.Launch.ControlSocket)) {
		return nil, ErrNotOurs
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("watch pid %d: %w", pid, err)
	}
	proc, _ := os.FindProcess(pid)
	p := &Prepared{VM: vm, Backend: res.Backend, Resolved: res, Argv: res.Command.Argv, Launch: res.Launch,
		env: env, layout: env.Layout(vm.Name), run: &steps.Runner{}}
	r := &Running{Prepared: p, Process: proc, ProcStart: startTime, Exited: make(chan struct{})}
	go func() {
		defer unix.Close(fd)
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			if _, err := unix.Poll(fds, -1); err == nil || !errors.Is(err, unix.EINTR) {
				break
			}
		}
		r.ExitErr = errors.New("the adopted hypervisor exited (its exit status is not visible to an adopting daemon)")
		if we := WorkloadExit(res.Launch.ConsoleLog, 0); we != nil {
			r.ExitErr = we // the guest said why: its workload ended
		}
		if env.Cgroups != nil {
			env.Cgroups.Remove(vm.Name)
		}
		close(r.Exited)
	}()
	return r, nil
}
