package launch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"microvm.dev/microvm/internal/cgroup"
	"microvm.dev/microvm/internal/confine"
	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/hostnet"
	"microvm.dev/microvm/internal/state"
	"microvm.dev/microvm/internal/steps"
	"microvm.dev/microvm/internal/vmm"
	"microvm.dev/microvm/internal/vmmuser"
)

// Running is a started hypervisor.
type Running struct {
	Prepared *Prepared
	Process  *os.Process
	// Started is when the process was started (before a saved state was
	// restored into it).
	Started time.Time
	// Exited is closed when the process has exited; ExitErr is then its error.
	Exited  chan struct{}
	ExitErr error
	// ProcStart is the process's start time (see ProcStartTime).
	ProcStart uint64
	// Ready is what the guest said when it became ready.
	Ready vmm.ReadyResult
	// Image is where the booted image came from (store.Image.Source: a
	// registry image's repo@sha256:… digest reference).
	Image   string
	console int64
	// movedAway says the guest runs on another host now (a live move):
	// this hypervisor holds it paused for good.
	movedAway atomic.Bool
}

// starter is one Start: the command being built and what its steps opened.
type starter struct {
	p       *Prepared
	limits  cgroup.Limits
	cmd     *exec.Cmd
	files   []*os.File // closed once the hypervisor has its own copies
	logf    *os.File
	helpers []*os.Process
	done    []<-chan error
	started time.Time // when the hypervisor process started
}

// Start starts the prepared hypervisor, as ordered steps: check the
// binaries, write its files and logs, cap it in its cgroup (when the VM has
// limits), open its TAP (when it takes one as a descriptor), start its
// helpers (virtiofsd) and finally the hypervisor, in its own session (so a
// signal to microvm's process group does not reach it). A start that fails
// undoes every step of Prepare and Start: helpers stopped, the cgroup and
// the VM's initramfs removed; volumes are kept.
func Start(ctx context.Context, p *Prepared) (*Running, error) {
	s := &starter{p: p, limits: Limits(p.VM), cmd: &exec.Cmd{SysProcAttr: &syscall.SysProcAttr{Setsid: true}}}
	defer func() {
		for _, f := range s.files {
			f.Close()
		}
	}()
	err := p.run.Run(ctx,
		steps.Step{Name: "check binaries", Do: s.checkBinaries},
		steps.Step{Name: "hypervisor files", Do: s.writeFiles},
		steps.Step{Name: "cgroup", Do: s.cgroup, Undo: s.removeCgroup},
		steps.Step{Name: "tap", Do: s.openTAP},
		steps.Step{Name: "virtiofsd", Do: s.startHelpers, Undo: s.killHelpers},
		steps.Step{Name: "start hypervisor", Do: s.startHypervisor},
		steps.Step{Name: "restore saved state", Do: s.restore},
	)
	if err != nil {
		return nil, err
	}
	p.run.Success() // from here on the watcher cleans up
	return s.watch(), nil
}

func (s *starter) fail(err error) error { return fmt.Errorf("vms.%s: %w", s.p.VM.Name, err) }

func (s *starter) checkBinaries(context.Context) error {
	c := s.p.Resolved.Command
	argv := s.p.argv()
	bin, err := exec.LookPath(argv[0])
	if err != nil {
		return s.fail(fmt.Errorf("%s is not installed: %w", c.Argv[0], err))
	}
	if c.Binary != "" && c.Binary != c.Argv[0] {
		if _, err := exec.LookPath(c.Binary); err != nil {
			return s.fail(fmt.Errorf("%s is not installed (%s backend): %w", c.Binary, s.p.Backend.Name(), err))
		}
	}
	s.cmd.Path, s.cmd.Args = bin, append([]string{bin}, argv[1:]...)
	return nil
}

// writeFiles writes the backend's files (its configuration) and opens the
// logs: vmm.log for its own output, the console log (the previous boot's
// kept as console.log.1), owned by the hypervisor's user where it writes
// the console itself.
func (s *starter) writeFiles(context.Context) error {
	u, l, c := s.p.Resolved.User, s.p.Launch, s.p.Resolved.Command
	if s.p.Boot.Resume == nil || s.p.Boot.Template != "" {
		os.Rename(l.ConsoleLog, l.ConsoleLog+".1") // a resumed guest's boot goes on in it
	}
	os.Remove(l.ControlSocket)
	for path, b := range c.Files {
		if err := state.WriteFile(path, b, 0o600); err != nil {
			return s.fail(err)
		}
		if u != nil {
			if err := u.Own(path); err != nil {
				return s.fail(err)
			}
		}
	}
	logf, err := os.OpenFile(s.p.layout.VMMLog(), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	s.logf, s.files = logf, append(s.files, logf)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if c.SerialToStdout {
		out, err := os.OpenFile(l.ConsoleLog, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		s.files, s.cmd.Stdout = append(s.files, out), out
		return nil
	}
	return s.consoleLogFor(u)
}

// consoleLogFor makes sure the console log exists, owned by the
// hypervisor's user u (who appends to it), when there is one.
func (s *starter) consoleLogFor(u *vmmuser.User) error {
	if u == nil {
		return nil
	}
	l := s.p.Launch.ConsoleLog
	f, err := os.OpenFile(l, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	f.Close()
	return u.Own(l)
}

// cgroup (re)creates the VM's group with this spec's limits, so changed
// limits apply; a VM without limits has no group.
func (s *starter) cgroup(context.Context) error {
	cg, name := s.p.env.Cgroups, s.p.VM.Name
	if cg == nil {
		return nil
	}
	if s.limits.IsZero() {
		cg.Remove(name) // limits removed from the file: no group
		return nil
	}
	if err := cg.Create(name, s.limits); err != nil {
		return fmt.Errorf("vms.%s.limits: %w", name, err)
	}
	if dir := cg.StartDir(name); dir != "" {
		// cgroup v2: the hypervisor starts inside its group (clone3).
		fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			cg.Remove(name)
			return fmt.Errorf("vms.%s.limits: %w", name, err)
		}
		s.files = append(s.files, os.NewFile(uintptr(fd), dir))
		s.cmd.SysProcAttr.UseCgroupFD, s.cmd.SysProcAttr.CgroupFD = true, fd
	}
	return nil
}

func (s *starter) removeCgroup() {
	if s.p.env.Cgroups != nil && !s.limits.IsZero() {
		s.p.env.Cgroups.Remove(s.p.VM.Name)
	}
}

// openTAP opens the VM's TAP as root for a hypervisor that takes it as a
// descriptor.
func (s *starter) openTAP(context.Context) error {
	if s.p.Launch.TAPFD == 0 {
		return nil
	}
	h, err := hostnet.Open(s.p.env.NetNS)
	if err != nil {
		return s.fail(err)
	}
	defer h.Close()
	tap, err := h.OpenTAP(s.p.VM.Net.TAP)
	if err != nil {
		return s.fail(err)
	}
	s.files, s.cmd.ExtraFiles = append(s.files, tap), []*os.File{tap}
	return nil
}

func (s *starter) startHelpers(context.Context) error {
	for _, sh := range s.p.Launch.Shares {
		if sh.Kind() != vmm.ShareVirtiofs {
			continue
		}
		proc, done, err := startVirtiofsd(sh, s.p.Resolved.User, s.logf)
		if err != nil {
			s.killHelpers()
			return err
		}
		s.helpers, s.done = append(s.helpers, proc), append(s.done, done)
	}
	return nil
}

func (s *starter) killHelpers() {
	for _, h := range s.helpers {
		h.Kill() // reaped by startVirtiofsd's waiter
	}
}

func (s *starter) startHypervisor(context.Context) error {
	if s.p.Resolved.Confined != nil {
		// Born in its own namespaces: the hypervisor keeps this process.
		confine.SysProcAttr(s.cmd.SysProcAttr)
	}
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.p.Resolved.Command.Argv[0], err)
	}
	s.started = time.Now()
	if cg := s.p.env.Cgroups; cg != nil && !s.limits.IsZero() && !s.cmd.SysProcAttr.UseCgroupFD {
		// cgroup v1: moved in right after the start, before the guest runs
		// for long; a hypervisor that cannot be capped is not left running.
		if err := cg.Place(s.p.VM.Name, s.cmd.Process.Pid); err != nil {
			s.cmd.Process.Kill()
			s.cmd.Wait()
			return fmt.Errorf("vms.%s.limits: %w", s.p.VM.Name, err)
		}
	}
	return nil
}

// watch follows the started hypervisor: when it exits, its helpers are
// stopped, the initramfs and the cgroup removed; when a helper dies first,
// the hypervisor is stopped (a guest whose store server died cannot go on:
// its root is gone), and the supervisor restarts the VM by policy.
func (s *starter) watch() *Running {
	r := &Running{Prepared: s.p, Process: s.cmd.Process, Started: s.started, Exited: make(chan struct{}), Image: s.p.Resolved.Image.Source}
	r.ProcStart, _ = ProcStartTime(r.Process.Pid)
	var vmmGone atomic.Bool
	// helperErr is why a helper's death stopped the hypervisor: a
	// virtiofsd that failed or was killed (not one that exited cleanly
	// because its guest disconnected, as at a poweroff).
	var helperErr atomic.Pointer[error]
	for _, done := range s.done {
		go func() {
			select {
			case err := <-done:
				if vmmGone.Load() {
					return // the hypervisor exited first and took its helpers
				}
				if err != nil {
					e := fmt.Errorf("virtiofsd exited while the VM ran (%v); its hypervisor was stopped", err)
					helperErr.Store(&e)
				}
				if f, ferr := os.OpenFile(s.p.layout.VMMLog(), os.O_WRONLY|os.O_APPEND, 0); ferr == nil {
					fmt.Fprintf(f, "microvm: virtiofsd exited while the VM ran (%v); stopping the hypervisor\n", err)
					f.Close()
				}
				r.Process.Signal(syscall.SIGTERM)
			case <-r.Exited:
			}
		}()
	}
	go func() {
		r.ExitErr = s.cmd.Wait()
		vmmGone.Store(true)
		if e := helperErr.Load(); e != nil && r.ExitErr == nil {
			// The hypervisor's clean exit was the SIGTERM sent for the
			// helper's death: the VM failed, whatever QEMU's status says.
			r.ExitErr = *e
		}
		s.p.dropHostCopies() // never left behind, whatever happened
		s.killHelpers()      // helpers never outlive the hypervisor
		if r.ExitErr != nil {
			if b, _ := os.ReadFile(s.p.layout.VMMLog()); len(b) > 0 {
				r.ExitErr = fmt.Errorf("%w: %s", r.ExitErr, strings.TrimSpace(string(b)))
			}
		} else if we := WorkloadExit(s.p.Launch.ConsoleLog, r.console); we != nil {
			r.ExitErr = we // the guest powered off because its workload ended
		}
		s.removeCgroup()
		close(r.Exited)
	}()
	return r
}

// WorkloadExit reads the workload's exit status from the console log
// after offset (the ready line), as microvm-init reported it before it
// powered off; nil when the guest reported none (no workload, or it was
// stopped before it exited).
func WorkloadExit(consoleLog string, offset int64) *guest.WorkloadExit {
	f, err := os.Open(consoleLog)
	if err != nil {
		return nil
	}
	defer f.Close()
	const tail = 64 << 10
	if fi, err := f.Stat(); err == nil && fi.Size()-tail > offset {
		offset = fi.Size() - tail
	}
	b, err := io.ReadAll(io.NewSectionReader(f, offset, tail))
	if err != nil {
		return nil
	}
	lines := strings.Split(string(b), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if we, ok := guest.ParseExitLine(strings.TrimRight(lines[i], "\r")); ok {
			return we
		}
	}
	return nil
}

// WaitReady waits for the guest's ready line on the console.
// The VM's initramfs and a clone's identity disk (its host key, its
// secrets) are removed then: the guest has read them.
func (r *Running) WaitReady(timeout time.Duration, echo func(string)) (vmm.ReadyResult, error) {
	if m := r.Prepared.Boot.Resume; m != nil && r.Prepared.Boot.Template == "" {
		// Resumed: ready as it was when saved; what it says now follows.
		r.Ready = m.Ready
		if fi, err := os.Stat(r.Prepared.Launch.ConsoleLog); err == nil {
			r.console, r.Ready.Offset = fi.Size(), fi.Size()
		}
		r.Prepared.dropHostCopies()
		return r.Ready, nil
	}
	res, err := vmm.WaitConsole(r.Prepared.Launch.ConsoleLog, r.console, guest.ReadyPrefix, guest.FailedPrefix, timeout, r.Exited, echo)
	if err == nil {
		r.console, r.Ready = res.Offset, res
		r.Prepared.dropHostCopies() // read by now
	}
	return res, err
}

// FollowConsole gives every console line after the ready line to echo until
// the hypervisor exits.
func (r *Running) FollowConsole(echo func(string)) {
	vmm.WaitConsole(r.Prepared.Launch.ConsoleLog, r.console, "\x00never", "\x00never", 100*365*24*time.Hour, r.Exited, echo)
}

// Pause stops the guest's vCPUs (for a consistent volume snapshot).
func (r *Running) Pause() error { return r.Prepared.Backend.Pause(r.Prepared.Launch) }

// Resume lets a paused guest run again.
func (r *Running) Resume() error { return r.Prepared.Backend.Resume(r.Prepared.Launch) }

// Stop asks the guest to shut down cleanly and waits up to timeout in all
// (a guest moved away live is ended at once):
// first the backend's polite request (the ACPI power button for QEMU and
// cloud-hypervisor, Ctrl-Alt-Del for Firecracker), after a third of the
// time its second request (Ctrl-Alt-Del for QEMU, which microvm-init also
// takes as a shutdown request); then SIGTERM and, 5 s later, SIGKILL.
func (r *Running) Stop(timeout time.Duration) error {
	select {
	case <-r.Exited:
		return nil
	default:
	}
	b, l := r.Prepared.Backend, r.Prepared.Launch
	if r.movedAway.Load() {
		// Nothing to shut down: the guest runs elsewhere, and must never
		// run here again.
		r.Process.Signal(syscall.SIGKILL)
		<-r.Exited
		return nil
	}
	if err := b.Shutdown(l, 0); err != nil {
		r.Process.Signal(syscall.SIGTERM)
	}
	escalation := []struct {
		wait time.Duration
		act  func()
	}{
		{timeout / 3, func() { b.Shutdown(l, 1) }},
		{timeout - timeout/3, func() { r.Process.Signal(syscall.SIGTERM) }},
		{5 * time.Second, func() { r.Process.Signal(syscall.SIGKILL) }},
	}
	for _, step := range escalation {
		select {
		case <-r.Exited:
			return nil
		case <-time.After(step.wait):
			step.act()
		}
	}
	select {
	case <-r.Exited:
		return nil
	case <-time.After(5 * time.Second):
		return errors.New("the hypervisor did not exit after SIGKILL")
	}
}

// Record is the run record of a started VM.
func (r *Running) Record() state.RunRecord {
	return state.RunRecord{Name: r.Prepared.VM.Name, Spec: *r.Prepared.VM, PID: r.Process.Pid, ProcStart: r.ProcStart, StartedAt: r.Started, Image: r.Image}
}
