package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"microvm.dev/microvm/internal/guest"
)

// lookPathInRoot resolves a command name on PATH inside the guest's root
// (exec.LookPath would search the initramfs).
func lookPathInRoot(name string) string {
	if strings.Contains(name, "/") {
		return name
	}
	for _, dir := range filepath.SplitList(guest.DefaultPath) {
		p := filepath.Join(dir, name)
		// Lstat: images link their tools absolutely (to /bin/busybox, say),
		// and such a link resolves only inside the root.
		fi, err := os.Lstat(root + p)
		if err == nil && (fi.Mode()&os.ModeSymlink != 0 || (!fi.IsDir() && fi.Mode()&0o111 != 0)) {
			return p
		}
	}
	return name
}

// rootCmd prepares a command that runs chrooted in the guest's root. It is
// built by hand: exec.Command would look the program up in the initramfs.
func rootCmd(argv []string, env map[string]string, dir string) *exec.Cmd {
	cmd := &exec.Cmd{Path: lookPathInRoot(argv[0]), Args: argv}
	base := map[string]string{"PATH": guest.DefaultPath, "HOME": "/root", "USER": "root", "LOGNAME": "root", "SHELL": "/bin/sh"}
	for k, v := range env {
		base[k] = v
	}
	keys := make([]string, 0, len(base))
	for k := range base {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		cmd.Env = append(cmd.Env, k+"="+base[k])
	}
	if dir == "" {
		dir = "/"
		if fi, err := os.Stat(root + "/root"); err == nil && fi.IsDir() {
			dir = "/root"
		}
	}
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root, Setsid: true}
	return cmd
}

// lookupUser resolves a user (name, uid, uid:gid, name:group) in the
// root's /etc/passwd and /etc/group, as the host checked it.
func lookupUser(spec string) (guest.User, error) {
	passwd, _ := os.ReadFile(root + "/etc/passwd")
	group, _ := os.ReadFile(root + "/etc/group")
	return guest.LookupUser(spec, passwd, group)
}

// credential is the workload's credential for user (nil: root as it is).
func credential(user string) (*syscall.Credential, guest.User, error) {
	u, err := lookupUser(user)
	if err != nil {
		return nil, u, err
	}
	if u.UID == 0 && u.GID == 0 && !strings.Contains(user, ":") {
		return nil, u, nil
	}
	return &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: u.Groups}, u, nil
}

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
	cred, u, err := credential(w.User)
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
	cmd := rootCmd(w.Command, env, dir)
	cmd.SysProcAttr.Credential = cred
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %v: %w", w.Command, err)
	}
	pid := cmd.Process.Pid
	done := in.procs.wait(pid)
	go func() {
		ws := <-done
		code := ws.ExitStatus()
		if ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
		logf("workload exited: %v", describeExit(ws))
		in.workloadExit.Store(int64(code) + 1)
		in.requestShutdown("the workload exited")
	}()
	return pid, nil
}
func describeExit(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "signal " + ws.Signal().String()
	}
	return fmt.Sprintf("status %d", ws.ExitStatus())
}
