package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"microvm.dev/microvm/internal/guest"
)

// defaultPath is the PATH of sessions and workloads.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// lookPathInRoot resolves a command name on PATH inside the guest's root
// (exec.LookPath would search the initramfs).
func lookPathInRoot(name string) string {
	if strings.Contains(name, "/") {
		return name
	}
	for _, dir := range filepath.SplitList(defaultPath) {
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
	base := map[string]string{"PATH": defaultPath, "HOME": "/root", "USER": "root", "LOGNAME": "root", "SHELL": "/bin/sh"}
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

// lookupUser finds a user name or uid in the root's /etc/passwd and returns
// its uid, gid and home; a bare uid not listed there runs with gid = uid.
func lookupUser(user string) (uid, gid uint32, home string, err error) {
	b, _ := os.ReadFile(root + "/etc/passwd")
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) < 7 || (f[0] != user && f[2] != user) {
			continue
		}
		u, err1 := strconv.ParseUint(f[2], 10, 32)
		g, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 != nil || err2 != nil {
			return 0, 0, "", fmt.Errorf("user %q: bad passwd entry %q", user, line)
		}
		return uint32(u), uint32(g), f[5], nil
	}
	if n, err := strconv.ParseUint(user, 10, 32); err == nil {
		return uint32(n), uint32(n), "/", nil
	}
	return 0, 0, "", fmt.Errorf("user %q is not in the image's /etc/passwd", user)
}

// startWorkload runs the VM's workload with its output on the console.
func (in *initd) startWorkload(w *guest.Workload) (int, error) {
	argv := w.Command
	if len(argv) == 1 {
		argv = []string{"/bin/sh", "-c", argv[0]}
	}
	env := map[string]string{}
	for k, v := range w.Env {
		env[k] = v
	}
	var cred *syscall.Credential
	if w.User != "" && w.User != "root" && w.User != "0" {
		uid, gid, home, err := lookupUser(w.User)
		if err != nil {
			return 0, err
		}
		cred = &syscall.Credential{Uid: uid, Gid: gid}
		if _, set := env["HOME"]; !set {
			env["HOME"] = home
		}
		if _, set := env["USER"]; !set {
			env["USER"], env["LOGNAME"] = w.User, w.User
		}
	}
	cmd := rootCmd(argv, env, w.Workdir)
	cmd.SysProcAttr.Credential = cred
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %v: %w", w.Command, err)
	}
	pid := cmd.Process.Pid
	done := in.procs.wait(pid)
	go func() {
		ws := <-done
		logf("workload exited: %v", describeExit(ws))
	}()
	return pid, nil
}

func describeExit(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "signal " + ws.Signal().String()
	}
	return fmt.Sprintf("status %d", ws.ExitStatus())
}
