package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/testutil"
)

const fleet3 = `
defaults: { vcpu: 1, memory: 384M, stopTimeout: 20s }
vms:
  a: { index: 1 }
  b: { index: 2 }
  c:
    index: 3
    volumes: [{ name: data, mountPoint: /data, size: 64M }]
`

// daemonLab runs the real microvm binary: a daemon and the client verbs,
// with state, socket and network in places of the test's own.
type daemonLab struct {
	t      *testing.T
	ns     *testutil.Netns
	state  string
	socket string
	daemon *exec.Cmd
	// inNS runs the daemon in the lab's namespace, so that its TCP
	// listeners are on the namespace's addresses.
	inNS bool
}

// newDaemonLab gives a test its own namespace, state directory (sharing the
// store and the initramfs cache) and socket; whatever it leaves running is
// killed at the end.
func newDaemonLab(t *testing.T, tag string) *daemonLab {
	t.Helper()
	l := &daemonLab{t: t, ns: testutil.NewNetns(t, tag), state: t.TempDir()}
	// The daemon's hypervisors run as the microvm user, who must pass
	// through to the state directory (as through /var/lib on a host).
	if err := os.Chmod(filepath.Dir(l.state), 0o711); err != nil {
		t.Fatal(err)
	}
	l.socket = filepath.Join(l.state, "run", "microvm.sock")
	for _, d := range []string{"store", "cache"} {
		if err := os.Symlink(filepath.Join(shared.dir, d), filepath.Join(l.state, d)); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("daemon log:\n%s", tail(l.log(), 40))
		}
		if l.daemon != nil && l.daemon.Process != nil {
			l.daemon.Process.Kill()
			l.daemon.Wait()
		}
		// Whatever is left of this test's VMs (their command lines name the
		// test's state directory).
		exec.Command("pkill", "-9", "-f", l.state).Run()
	})
	return l
}

// twoVMsWithData is a fleet of two small VMs, each with a data volume.
const twoVMsWithData = `defaults: { memory: 256M, stopTimeout: 20s, volumes: [{ name: data, mountPoint: /data, size: 64M }] }
vms:
  a: { index: 1 }
  b: { index: 2 }
`

// writeFile writes the lab's infra.yaml and returns its path.
func (l *daemonLab) writeFile(src string) string {
	l.t.Helper()
	file := filepath.Join(l.state, "infra.yaml")
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		l.t.Fatal(err)
	}
	return file
}

func (l *daemonLab) args(a ...string) []string {
	return append([]string{"--state-dir", l.state, "--socket", l.socket, "--netns", l.ns.Path}, a...)
}

func (l *daemonLab) cli(a ...string) (string, error) {
	out, err := exec.Command(filepath.Join(shared.initDir, "microvm"), l.args(a...)...).CombinedOutput()
	return string(out), err
}

func (l *daemonLab) startDaemon(file string, extra ...string) {
	l.t.Helper()
	args := []string{"daemon"}
	if file != "" {
		args = append(args, "--config", file)
	}
	args = append(args, extra...)
	cmd := exec.Command(filepath.Join(shared.initDir, "microvm"), l.args(args...)...)
	if l.inNS {
		cmd = exec.Command("nsenter", append([]string{"--net=" + l.ns.Path, cmd.Path}, cmd.Args[1:]...)...)
	}
	logf, err := os.OpenFile(filepath.Join(l.state, "daemon.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		l.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	logf.Close()
	l.daemon = cmd
	// Wait for a connection, not the file: a killed daemon leaves its socket.
	for i := 0; i < 200; i++ {
		if c, err := net.Dial("unix", l.socket); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	l.t.Fatalf("the daemon did not open its socket; log:\n%s", l.log())
}

func (l *daemonLab) log() string {
	b, _ := os.ReadFile(filepath.Join(l.state, "daemon.log"))
	return string(b)
}

func (l *daemonLab) list() map[string]apitypes.VMStatus {
	l.t.Helper()
	out, err := l.cli("list", "-o", "json")
	if err != nil {
		l.t.Fatalf("list: %v\n%s", err, out)
	}
	var vms []apitypes.VMStatus
	if err := json.Unmarshal([]byte(out), &vms); err != nil {
		l.t.Fatalf("list output: %v\n%s", err, out)
	}
	m := map[string]apitypes.VMStatus{}
	for _, v := range vms {
		m[v.Name] = v
	}
	return m
}

// waitFor polls list until ok holds.
func (l *daemonLab) waitFor(what string, timeout time.Duration, ok func(map[string]apitypes.VMStatus) bool) map[string]apitypes.VMStatus {
	l.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		vms := l.list()
		if ok(vms) {
			return vms
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("%s: not within %s; VMs: %+v\ndaemon log:\n%s", what, timeout, vms, l.log())
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func allRunning(names ...string) func(map[string]apitypes.VMStatus) bool {
	return func(vms map[string]apitypes.VMStatus) bool {
		for _, n := range names {
			if vms[n].State != apitypes.Running || vms[n].PID == 0 {
				return false
			}
		}
		return true
	}
}

// alive reports whether pid runs (a zombie, whose parent has not reaped it
// yet, has exited).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

func TestDaemonFleet(t *testing.T) {
	requireGuestEnv(t)
	l := newDaemonLab(t, "dmn")
	file := filepath.Join(l.state, "infra.yaml")
	os.WriteFile(file, []byte(fleet3), 0o644)

	// A daemon applies the file; all three VMs come up.
	l.startDaemon(file)
	vms := l.waitFor("three VMs running", 4*time.Minute, allRunning("a", "b", "c"))
	pids := map[string]int{"a": vms["a"].PID, "b": vms["b"].PID, "c": vms["c"].PID}

	// kill -9 of the daemon: the VMs keep running, a new daemon adopts them.
	l.daemon.Process.Signal(syscall.SIGKILL)
	l.daemon.Wait()
	time.Sleep(500 * time.Millisecond)
	for n, pid := range pids {
		if !alive(pid) {
			t.Fatalf("%s (pid %d) died with the daemon", n, pid)
		}
	}
	if out, err := l.cli("list"); err == nil || !strings.Contains(out, "no daemon is listening") {
		t.Errorf("list without a daemon: %v\n%s", err, out)
	}
	l.startDaemon(file) // re-applies the same file: nothing to restart
	vms = l.waitFor("the VMs adopted", time.Minute, allRunning("a", "b", "c"))
	for n, pid := range pids {
		if vms[n].PID != pid {
			t.Errorf("%s: pid %d after the daemon restart, want the adopted %d", n, vms[n].PID, pid)
		}
	}

	// Changing b's memory restarts b, and only b.
	changed := strings.Replace(fleet3, "b: { index: 2 }", "b: { index: 2, memory: 448M }", 1)
	os.WriteFile(file, []byte(changed), 0o644)
	out, err := l.cli("apply", "-f", file, "-o", "json")
	if err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	var res struct {
		VMs []struct{ Name, Action string }
	}
	json.Unmarshal([]byte(out), &res)
	got := map[string]string{}
	for _, v := range res.VMs {
		got[v.Name] = v.Action
	}
	if got["a"] != "unchanged" || got["b"] != "restarted" || got["c"] != "unchanged" {
		t.Errorf("apply actions = %v, want only b restarted", got)
	}
	vms = l.list()
	if vms["a"].PID != pids["a"] || vms["c"].PID != pids["c"] || vms["b"].PID == pids["b"] || vms["b"].State != apitypes.Running {
		t.Errorf("after changing b: %+v (before %v)", vms, pids)
	}
	if vms["b"].Spec.Memory.String() != "448M" {
		t.Errorf("b's memory = %s", vms["b"].Spec.Memory)
	}

	// A bad file changes nothing.
	os.WriteFile(file+".bad", []byte(strings.Replace(changed, "index: 1", "index: 1, memory: 1M", 1)), 0o644)
	if out, err := l.cli("apply", "-f", file+".bad"); err == nil || !strings.Contains(out, "below the minimum") || !strings.Contains(out, "nothing was changed") {
		t.Errorf("bad apply: %v\n%s", err, out)
	}
	if vms2 := l.list(); vms2["a"].PID != vms["a"].PID || vms2["b"].PID != vms["b"].PID {
		t.Error("a bad file restarted VMs")
	}

	// A VM killed from outside is restarted by policy, after a backoff.
	syscall.Kill(vms["a"].PID, syscall.SIGKILL)
	vms = l.waitFor("a restarted after being killed", 2*time.Minute, func(v map[string]apitypes.VMStatus) bool {
		return v["a"].State == apitypes.Running && v["a"].PID != pids["a"] && v["a"].Restarts == 1
	})
	if !strings.Contains(vms["a"].LastExit, "signal: killed") && !strings.Contains(vms["a"].LastExit, "exited") {
		t.Errorf("a's last exit = %q", vms["a"].LastExit)
	}

	// Removing c from the file stops it and removes its network; its volume stays.
	noC := strings.Replace(changed, "  c:\n    index: 3\n    volumes: [{ name: data, mountPoint: /data, size: 64M }]\n", "", 1)
	os.WriteFile(file, []byte(noC), 0o644)
	if out, err := l.cli("apply", "-f", file); err != nil || !strings.Contains(out, "removed") {
		t.Fatalf("apply without c: %v\n%s", err, out)
	}
	if alive(pids["c"]) {
		t.Error("c's hypervisor still runs after c left the file")
	}
	if _, err := l.ns.Exec("ip", "link", "show", "br-c"); err == nil {
		t.Error("c's bridge is still there")
	}
	vol := filepath.Join(l.state, "vms", "c", "data.img")
	if _, err := os.Stat(vol); err != nil {
		t.Errorf("c's volume was deleted: %v", err)
	}
	if _, ok := l.list()["c"]; ok {
		t.Error("c is still listed")
	}

	// stop shuts a VM down cleanly within its timeout; status says so.
	t0 := time.Now()
	if out, err := l.cli("stop", "b"); err != nil || !strings.Contains(out, "b: stopped") {
		t.Fatalf("stop b: %v\n%s", err, out)
	}
	if d := time.Since(t0); d > 15*time.Second {
		t.Errorf("stopping b took %s", d)
	}
	if out, _ := l.cli("status", "b"); !strings.Contains(out, "state:") || !strings.Contains(out, "stopped") {
		t.Errorf("status b:\n%s", out)
	}
	if out, err := l.cli("start", "b"); err != nil || !strings.Contains(out, "b: running") {
		t.Errorf("start b: %v\n%s", err, out)
	}
	if out, err := l.cli("logs", "b"); err != nil || !strings.Contains(out, "microvm-ready vm=b") {
		t.Errorf("logs b: %v\n%.500s", err, out)
	}
	before := l.list()["b"].PID
	if out, err := l.cli("restart", "b"); err != nil || !strings.Contains(out, "b: running") {
		t.Errorf("restart b: %v\n%s", err, out)
	}
	if after := l.list()["b"]; after.PID == before || after.State != apitypes.Running {
		t.Errorf("restart b: pid %d → %d, state %s", before, after.PID, after.State)
	}

	// exec, ssh and console reach the VM.
	if out, err := l.cli("exec", "b", "--", "hostname"); err != nil || strings.TrimSpace(out) != "b" {
		t.Errorf("exec hostname: %v %q", err, out)
	}
	// Without --netns, exec reaches the VM in the daemon's namespace.
	bare := exec.Command(filepath.Join(shared.initDir, "microvm"), "--state-dir", l.state, "--socket", l.socket, "exec", "b", "--", "hostname")
	if out, err := bare.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "b" {
		t.Errorf("exec without --netns: %v %q", err, out)
	}
	cmd := exec.Command(filepath.Join(shared.initDir, "microvm"), l.args("exec", "b", "--", "sh", "-c", "exit 3")...)
	if err := cmd.Run(); cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 3 {
		t.Errorf("exec exit status: %v, want 3", err)
	}
	if out, err := l.cli("ssh", "b", "--", "-o", "BatchMode=yes", "cat /etc/hostname"); err != nil || strings.TrimSpace(out) != "b" {
		t.Errorf("ssh: %v %q", err, out)
	}
	con := exec.Command(filepath.Join(shared.initDir, "microvm"), l.args("console", "b")...)
	con.Stdin = strings.NewReader("echo $((6*7))\n")
	if out, err := con.CombinedOutput(); err != nil || !strings.Contains(string(out), "42") {
		t.Errorf("console: %v\n%s", err, out)
	}

	// rm --purge deletes the removed VM's files, volume included; a VM
	// still in the file is refused.
	if out, err := l.cli("rm", "a"); err == nil || !strings.Contains(out, "is in the applied file") {
		t.Errorf("rm a: %v\n%s", err, out)
	}
	if out, err := l.cli("rm", "c", "--purge"); err != nil {
		t.Errorf("rm c --purge: %v\n%s", err, out)
	}
	if _, err := os.Stat(vol); !os.IsNotExist(err) {
		t.Error("rm --purge kept c's volume")
	}
	for _, n := range []string{"a", "b"} {
		if out, err := l.cli("stop", n); err != nil {
			t.Errorf("stop %s: %v\n%s", n, err, out)
		}
	}
}
