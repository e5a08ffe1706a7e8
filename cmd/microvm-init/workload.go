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

// lookupGroup finds a group name or gid in the root's /etc/group.
func lookupGroup(group string) (uint32, error) {
	b, _ := os.ReadFile(root + "/etc/group")
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) >= 3 && (f[0] == group || f[2] == group) {
			g, err := strconv.ParseUint(f[2], 10, 32)
			if err != nil {
				return 0, fmt.Errorf("group %q: bad group entry %q", group, line)
			}
			return uint32(g), nil
		}
	}
	if n, err := strconv.ParseUint(group, 10, 32); err == nil {
		return uint32(n), nil
	}
	return 0, fmt.Errorf("group %q is not in the image's /etc/group", group)
}

// supplementaryGroups are the groups of /etc/group that list name as a
// member, besides gid.
func supplementaryGroups(name string, gid uint32) []uint32 {
	var out []uint32
	b, _ := os.ReadFile(root + "/etc/group")
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) < 4 {
			continue
		}
		g, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil || uint32(g) == gid {
			continue
		}
		for _, m := range strings.Split(f[3], ",") {
			if m == name {
				out = append(out, uint32(g))
			}
		}
	}
	return out
}

// credential resolves a workload's user as Docker does: name, uid,
// uid:gid or name:group; the user's supplementary groups come along
// (none for a bare uid the image does not list). It returns the
// credential (nil for root without a group) and the user's home and name.
func credential(user string) (*syscall.Credential, string, string, error) {
	if user == "" {
		user = "root"
	}
	name, group, hasGroup := strings.Cut(user, ":")
	uid, gid, home, err := lookupUser(name)
	if err != nil {
		return nil, "", "", err
	}
	if hasGroup {
		if gid, err = lookupGroup(group); err != nil {
			return nil, "", "", err
		}
	}
	login := name
	if _, err := strconv.ParseUint(name, 10, 32); err == nil {
		login = passwdName(uid)
	}
	if uid == 0 && gid == 0 && !hasGroup {
		return nil, home, login, nil
	}
	return &syscall.Credential{Uid: uid, Gid: gid, Groups: supplementaryGroups(login, gid)}, home, login, nil
}

// passwdName is uid's name in the root's /etc/passwd ("" if none).
func passwdName(uid uint32) string {
	b, _ := os.ReadFile(root + "/etc/passwd")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Split(line, ":"); len(f) >= 7 && f[2] == strconv.FormatUint(uint64(uid), 10) {
			return f[0]
		}
	}
	return ""
}

// workloadNofile is the open files limit a workload gets, Docker's.
const workloadNofile = 1 << 20

// startWorkload runs the VM's workload with its output on the console, as
// a container runtime would: the command as given (a single string with
// spaces through /bin/sh -c), its user with their groups, Docker's open
// files limit. When it exits, its status is reported on the console and
// the VM shuts down: a VM's life is its workload's.
func (in *initd) startWorkload(w *guest.Workload) (int, error) {
	argv := w.Command
	if len(argv) == 1 && strings.ContainsAny(argv[0], " \t") {
		argv = []string{"/bin/sh", "-c", argv[0]}
	}
	env := map[string]string{}
	for k, v := range w.Env {
		env[k] = v
	}
	cred, home, login, err := credential(w.User)
	if err != nil {
		return 0, err
	}
	if _, set := env["HOME"]; !set && home != "" {
		env["HOME"] = home
	}
	if _, set := env["USER"]; !set && login != "" {
		env["USER"], env["LOGNAME"] = login, login
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
	cmd := rootCmd(argv, env, dir)
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
