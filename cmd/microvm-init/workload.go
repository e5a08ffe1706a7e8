package main

import (
	"fmt"
	"os"
	"syscall"

	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/guestagent"
)

// workloadNofile is the open files limit a workload gets, Docker's.
const workloadNofile = 1 << 20

// startWorkload runs the VM's workload with its output on the console, as
// a container runtime would: the command as given (the host has already
// put a single string with spaces through /bin/sh -c), its user with their
// groups, Docker's open files limit. When it exits, its status is reported on the console and
// the VM shuts down: a VM's life is its workload's.
func (in *initd) startWorkload(w *guest.Workload) (int, error) {
	env := map[string]string{}
	for k, v := range w.Env {
		env[k] = v
	}
	cred, u, err := in.root.Credential(w.User)
	if err != nil {
		return 0, err
	}
	if _, set := env["HOME"]; !set && u.Home != "" {
		env["HOME"] = u.Home
	}
	if _, set := env["USER"]; !set && u.Name != "" {
		env["USER"], env["LOGNAME"] = u.Name, u.Name
	}
	// Inherited by the workload (Go passes a limit set this way on).
	lim := syscall.Rlimit{Cur: workloadNofile, Max: workloadNofile}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		logf("raise the open files limit: %v", err)
	}
	dir := w.Workdir
	if dir == "" {
		dir = "/" // Docker's default, whoever the user is
	}
	cmd := in.root.Command(w.Command, env, dir)
	cmd.SysProcAttr.Credential = cred
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %v: %w", w.Command, err)
	}
	pid := cmd.Process.Pid
	done := in.procs.wait(pid)
	go func() {
		ws := <-done
		code := guestagent.ExitCode(ws)
		logf("workload exited: %v", guestagent.DescribeExit(ws))
		in.workloadExit.Store(int64(code) + 1)
		in.requestShutdown("the workload exited")
	}()
	return pid, nil
}
