package launch

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"microvm.dev/microvm/internal/vmm"
	"microvm.dev/microvm/internal/vmmuser"
)

// virtiofsdPaths are where distributions install virtiofsd.
var virtiofsdPaths = []string{"/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd", "/usr/bin/virtiofsd"}

// Virtiofsd returns the installed virtiofsd, or "".
func Virtiofsd() string {
	for _, p := range virtiofsdPaths {
		if unix.Access(p, unix.X_OK) == nil {
			return p
		}
	}
	if p, err := exec.LookPath("virtiofsd"); err == nil {
		return p
	}
	return ""
}

// startVirtiofsd serves a share read-only over vhost-user. virtiofsd has no
// read-only mode, so it runs in a private mount namespace where the tree is
// a read-only bind mount of itself: a guest that remounts its store
// read-write still cannot write through to the host.
// The returned channel gives virtiofsd's exit (nil for a clean exit, as
// after its guest disconnected) and is then closed.
//
// With an unprivileged hypervisor, the socket belongs to that user's group
// (virtiofsd's --socket-group) so the hypervisor can connect to it.
func startVirtiofsd(sh vmm.Share, u *vmmuser.User, log *os.File) (*os.Process, <-chan error, error) {
	bin := Virtiofsd()
	// A virtiofsd left serving this socket (its hypervisor gone, its daemon
	// killed before it could stop it) holds the socket's pid file lock, and
	// a new one would exit at once: it serves nothing now, so it goes.
	stopStaleVirtiofsd(sh.VirtiofsSocket, log)
	os.Remove(sh.VirtiofsSocket)
	script := `mount --bind -o ro "$1" "$1" && exec "$2" --socket-path="$3" -o source="$1" -o sandbox=namespace -o cache=always -o no_posix_lock -o no_flock`
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", sh.Path, bin, sh.VirtiofsSocket)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start virtiofsd: %w", err)
	}
	exited := make(chan error, 1)
	done := make(chan error, 1)
	go func() { err := cmd.Wait(); exited <- err; done <- err; close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(sh.VirtiofsSocket); err == nil {
			if u != nil {
				// Only this VM's hypervisor may connect.
				if err := errors.Join(u.Own(sh.VirtiofsSocket), os.Chmod(sh.VirtiofsSocket, 0o600)); err != nil {
					cmd.Process.Kill()
					return nil, nil, fmt.Errorf("virtiofsd socket: %w", err)
				}
			}
			return cmd.Process, done, nil
		}
		select {
		case err := <-exited:
			return nil, nil, fmt.Errorf("virtiofsd for %s exited: %v (see vmm.log)", sh.Path, err)
		default:
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			return nil, nil, fmt.Errorf("virtiofsd for %s did not create %s", sh.Path, sh.VirtiofsSocket)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stopStaleVirtiofsd ends every virtiofsd still serving socket (SIGTERM,
// then SIGKILL after 5 s): the VM it served is not running, or it would not
// be started again.
func stopStaleVirtiofsd(socket string, log *os.File) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	want := []byte("--socket-path=" + socket + "\x00")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, want) || !bytes.Contains(b, []byte("virtiofsd")) {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err != nil {
			continue
		}
		fmt.Fprintf(log, "microvm: stopping a stale virtiofsd (pid %d) still serving %s\n", pid, socket)
		unix.Kill(pid, unix.SIGTERM)
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && running(pid); time.Sleep(20 * time.Millisecond) {
		}
		unix.Kill(pid, unix.SIGKILL)
	}
}
