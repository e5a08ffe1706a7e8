package e2e

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"microvm.dev/microvm/internal/testutil"
	"microvm.dev/microvm/internal/verify"
)

// tryOpenEnv makes the test binary, run as another user, try to open each
// path it is given (a file for reading and writing, a socket by connecting)
// and print "PATH: ok" or "PATH: the error": the kernel's answer to that
// user, not a guess from modes.
const tryOpenEnv = "MICROVM_E2E_TRY_OPEN"

func tryOpen(paths []string) {
	for _, p := range paths {
		var err error
		if strings.HasSuffix(p, ".sock") {
			var c net.Conn
			if c, err = net.Dial("unix", p); err == nil {
				c.Close()
			}
		} else {
			var f *os.File
			if f, err = os.OpenFile(p, os.O_RDWR, 0); err == nil {
				f.Close()
			}
		}
		if err == nil {
			fmt.Printf("%s: ok\n", p)
			continue
		}
		var errno syscall.Errno
		errors.As(err, &errno)
		fmt.Printf("%s: %s\n", p, errno.Error())
	}
}

// openAs runs tryOpen as uid and gid (no other groups) and returns each
// path's answer.
func openAs(t *testing.T, uid, gid uint32, paths ...string) map[string]string {
	t.Helper()
	// The test binary's own directory is root's alone: a copy others may run.
	self := filepath.Join(shared.initDir, "e2e-try-open")
	if _, err := os.Stat(self); err != nil {
		b, err := os.ReadFile(os.Args[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(self+".tmp", b, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(self+".tmp", self); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(self, paths...)
	cmd.Env = append(os.Environ(), tryOpenEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("open as %d: %v\n%s", uid, err, out)
	}
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok {
			m[k] = v
		}
	}
	return m
}

// procIDs are the real uid and gid of pid.
func procIDs(t *testing.T, pid int) (uint32, uint32) {
	t.Helper()
	uid, _ := strconv.ParseUint(procField(t, pid, "Uid"), 10, 32)
	gid, _ := strconv.ParseUint(procField(t, pid, "Gid"), 10, 32)
	return uint32(uid), uint32(gid)
}

// procField is the first value of the line key: in /proc/PID/status.
func procField(t *testing.T, pid int, key string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok && len(strings.Fields(v)) > 0 {
			return strings.Fields(v)[0]
		}
	}
	t.Fatalf("no %s in /proc/%d/status", key, pid)
	return ""
}

// TestOneIdentityPerVM: with a range of ids (--vmm-ids), each VM's QEMU
// runs as a uid and gid of its own, kept across daemon restarts. Run as
// one VM's hypervisor's identity, the kernel refuses another VM's volume,
// console log, QMP and console sockets, and grants its own; verify shows
// the two uids.
func TestOneIdentityPerVM(t *testing.T) {
	requireGuestEnv(t)
	l := newDaemonLab(t, "ids")
	file := l.writeFile(twoVMsWithData)
	const first = 1879048192
	ids := "--vmm-ids=" + strconv.Itoa(first) + ":65536"
	l.startDaemon(file, ids)
	vms := l.waitFor("a and b running", 4*time.Minute, allRunning("a", "b"))

	uids := map[string]uint32{}
	gids := map[string]uint32{}
	for _, vm := range []string{"a", "b"} {
		uids[vm], gids[vm] = procIDs(t, vms[vm].PID)
		b, err := os.ReadFile(filepath.Join(l.state, "vms", vm, "identity"))
		off, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || uids[vm] != uint32(first+off) || gids[vm] != uint32(first+off) || off == 0 {
			t.Fatalf("%s's hypervisor runs as %d:%d, its identity file says %q (%v)", vm, uids[vm], gids[vm], b, err)
		}
	}
	if uids["a"] == uids["b"] {
		t.Fatalf("a and b share uid %d", uids["a"])
	}
	t.Logf("hypervisors: a uid %d, b uid %d", uids["a"], uids["b"])

	files := func(vm string) []string {
		d, r := filepath.Join(l.state, "vms", vm), filepath.Join(l.state, "run", "vms", vm)
		return []string{filepath.Join(d, "data.img"), filepath.Join(d, "console.log"), filepath.Join(r, "qmp.sock"), filepath.Join(r, "console.sock")}
	}
	got := openAs(t, uids["a"], gids["a"], append(files("a"), files("b")...)...)
	for _, p := range files("a") {
		if got[p] != "ok" {
			t.Errorf("a's hypervisor identity cannot open its own %s: %s", filepath.Base(p), got[p])
		}
	}
	refused := 0
	for _, p := range files("b") {
		if got[p] != syscall.EACCES.Error() {
			t.Errorf("a's hypervisor identity opening b's %s: %q, want %q", filepath.Base(p), got[p], syscall.EACCES.Error())
			continue
		}
		refused++
	}
	t.Logf("as a's hypervisor: own files %v; b's refused %d of %d", files("a"), refused, len(files("b")))
	testutil.Report(t, testutil.FaultResult{Fault: "one VM's hypervisor identity opening another VM's volume, console log, QMP and console sockets", Trials: len(files("b")),
		Result: fmt.Sprintf("refused by the kernel (EACCES) %d of %d; its own four open; the two QEMUs run as uids %d and %d", refused, len(files("b")), uids["a"], uids["b"])})

	// Each hypervisor is shut into a root of its own: b's files are not
	// there at all, its own are; it is process 1 of its PID namespace and
	// sees no other.
	for vm, other := range map[string]string{"a": "b", "b": "a"} {
		pid := vms[vm].PID
		lacks, err := verify.Unconfined(fmt.Sprintf("/proc/%d", pid), "/proc/self")
		if err != nil || len(lacks) > 0 {
			t.Errorf("%s's hypervisor lacks %v (%v)", vm, lacks, err)
		}
		root := fmt.Sprintf("/proc/%d/root", pid)
		for _, p := range files(vm) {
			if _, err := os.Lstat(root + p); err != nil {
				t.Errorf("%s's hypervisor does not see its own %s: %v", vm, p, err)
			}
		}
		for _, p := range append(files(other), filepath.Join(l.state, "vms", other), filepath.Join(l.state, "run", "vms", other), "/root", "/home", "/etc/shadow") {
			if _, err := os.Lstat(root + p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s's hypervisor sees %s (%v)", vm, p, err)
			}
		}
		entries, _ := os.ReadDir(root + "/proc")
		var pids []string
		for _, e := range entries {
			if _, err := strconv.Atoi(e.Name()); err == nil {
				pids = append(pids, e.Name())
			}
		}
		if strings.Join(pids, " ") != "1" {
			t.Errorf("%s's hypervisor sees processes %v, want only itself as 1", vm, pids)
		}
	}
	testutil.Report(t, testutil.FaultResult{Fault: "a hypervisor looking for another VM's files and processes from inside its confinement", Trials: 2,
		Result: "the other VM's volume, console log, sockets and directories do not exist in its root; it sees only itself (pid 1)"})

	out, err := l.cli("verify", "-f", file)
	if !strings.Contains(out, "one identity per hypervisor") || !strings.Contains(out, fmt.Sprintf("a uid %d, b uid %d", uids["a"], uids["b"])) ||
		strings.Count(out, "a root of its own (its VM's files only)") != 2 {
		t.Errorf("verify: %v\n%s", err, out)
	}

	// A new daemon adopts them as they run; a restarted VM keeps its id.
	l.daemon.Process.Signal(syscall.SIGTERM)
	l.daemon.Wait()
	l.startDaemon(file, ids)
	after := l.waitFor("a and b adopted", time.Minute, allRunning("a", "b"))
	if after["a"].PID != vms["a"].PID || after["b"].PID != vms["b"].PID {
		t.Fatalf("not adopted: before %d/%d, after %d/%d", vms["a"].PID, vms["b"].PID, after["a"].PID, after["b"].PID)
	}
	if out, err := l.cli("restart", "b"); err != nil {
		t.Fatalf("restart b: %v\n%s", err, out)
	}
	after = l.waitFor("b running again", 3*time.Minute, allRunning("b"))
	if uid, _ := procIDs(t, after["b"].PID); uid != uids["b"] {
		t.Errorf("b came back as uid %d, was %d", uid, uids["b"])
	}
}
