// Package guestroot is the guest's root as microvm-init prepares and uses
// it, the root's directory a parameter (/newroot while PID 1 builds it, ""
// for the agent already inside it, a directory of a test's in the tests):
// commands looked up and run chrooted there, its users, the files that
// give a VM its identity and its secrets, the image's own init readied
// (its units or inittab lines, udev's database), and a new volume
// populated from the image.
package guestroot

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"microvm.dev/microvm/internal/guest"
)

// Root is the directory of the guest's root ("" for /, the process's own).
type Root string

// Path is the path p of the guest's root as seen from outside it.
func (r Root) Path(p string) string { return string(r) + p }

// LookPath resolves a command name on PATH inside the root
// (exec.LookPath would search the initramfs).
func (r Root) LookPath(name string) string {
	if strings.Contains(name, "/") {
		return name
	}
	for _, dir := range filepath.SplitList(guest.DefaultPath) {
		p := filepath.Join(dir, name)
		// Lstat: images link their tools absolutely (to /bin/busybox, say),
		// and such a link resolves only inside the root.
		fi, err := os.Lstat(r.Path(p))
		if err == nil && (fi.Mode()&os.ModeSymlink != 0 || (!fi.IsDir() && fi.Mode()&0o111 != 0)) {
			return p
		}
	}
	return name
}

// Command prepares a command that runs chrooted in the root, in its own
// session, with a login's environment (env added to it, sorted) in dir
// (default /root when the root has one, else /). It is built by hand:
// exec.Command would look the program up in the initramfs.
func (r Root) Command(argv []string, env map[string]string, dir string) *exec.Cmd {
	cmd := &exec.Cmd{Path: r.LookPath(argv[0]), Args: argv}
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
		if fi, err := os.Stat(r.Path("/root")); err == nil && fi.IsDir() {
			dir = "/root"
		}
	}
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if r != "" {
		cmd.SysProcAttr.Chroot = string(r)
	}
	return cmd
}

// LookupUser resolves a user (name, uid, uid:gid, name:group) in the
// root's /etc/passwd and /etc/group, as the host checked it.
func (r Root) LookupUser(spec string) (guest.User, error) {
	passwd, _ := os.ReadFile(r.Path("/etc/passwd"))
	group, _ := os.ReadFile(r.Path("/etc/group"))
	return guest.LookupUser(spec, passwd, group)
}

// Credential is the credential a process of user runs with (nil: root as
// it is), and the user.
func (r Root) Credential(user string) (*syscall.Credential, guest.User, error) {
	u, err := r.LookupUser(user)
	if err != nil {
		return nil, u, err
	}
	if u.UID == 0 && u.GID == 0 && !strings.Contains(user, ":") {
		return nil, u, nil
	}
	return &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: u.Groups}, u, nil
}

// HasShell says whether the root has /bin/sh (Lstat: a link resolves only
// in the root).
func (r Root) HasShell() bool {
	_, err := os.Lstat(r.Path("/bin/sh"))
	return err == nil
}

// FindInit is the image's init: the first of guest.Inits the root has.
func (r Root) FindInit() (string, error) {
	for _, p := range guest.Inits {
		// Lstat: the link (often absolute, to /bin/busybox or systemd)
		// resolves only inside the root.
		if fi, err := os.Lstat(r.Path(p)); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("init: image: the image has no /sbin/init")
}
