package e2e

import (
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"microvm.dev/microvm/internal/testutil"
	"microvm.dev/microvm/internal/vmssh"
)

// `microvm run` readies a VM the way the daemon does (launch.AwaitReady):
// a VM the daemon saved resumes in the foreground with its clock set to
// the host's, and is ready only once its healthCheck passes; a VM whose
// healthCheck never passes is not ready and run fails, saying why.
func TestRunInForeground(t *testing.T) {
	requireGuestEnv(t)
	l := newDaemonLab(t, "frun")
	file := l.writeFile(`defaults: { memory: 256M, stopTimeout: 20s }
vms:
  a: { index: 1, store: block, healthCheck: { tcp: 22 } }
  b: { index: 2, store: block, healthCheck: { tcp: 9 }, autostart: false }
`)
	l.startDaemon(file)
	l.waitFor("a running", 3*time.Minute, allRunning("a"))
	if out, err := l.cli("stop", "--save", "a"); err != nil || !strings.Contains(out, "a: saved (") {
		t.Fatalf("stop --save a: %v\n%s", err, out)
	}
	l.daemon.Process.Signal(syscall.SIGTERM)
	l.daemon.Wait()
	l.daemon = nil
	// Saved for a while: a resumed clock that stood still would be behind.
	time.Sleep(5 * time.Second)

	run := exec.Command(filepath.Join(shared.initDir, "microvm"), l.args("run", "a", "-f", file, "-q")...)
	var out testutil.SyncBuffer
	run.Stdout, run.Stderr = &out, &out
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- run.Wait() }()
	deadline := time.After(2 * time.Minute)
	for !strings.Contains(out.String(), "a is ready") {
		select {
		case err := <-exited:
			t.Fatalf("microvm run a ended (%v) before a was ready:\n%s", err, out.String())
		case <-deadline:
			run.Process.Kill()
			t.Fatalf("a not ready in 2 minutes:\n%s", out.String())
		case <-time.After(200 * time.Millisecond):
		}
	}
	if !strings.Contains(out.String(), "resumed from the state saved at") {
		t.Errorf("microvm run a did not resume the saved state:\n%s", out.String())
	}
	s, closeSSH, err := vmssh.Session(l.state, "a", "10.1.0.2", l.ns.Path, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	now, err := s.Output("date +%s")
	closeSSH()
	if err != nil {
		t.Fatalf("date in a: %v", err)
	}
	guestNow, err := strconv.ParseInt(strings.TrimSpace(string(now)), 10, 64)
	if err != nil {
		t.Fatalf("date in a: %q", now)
	}
	if skew := guestNow - time.Now().Unix(); skew < -2 || skew > 2 {
		t.Errorf("the guest resumed by microvm run is %d s off the host's clock", skew)
	}
	run.Process.Signal(syscall.SIGINT)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("microvm run a after Ctrl-C: %v\n%s", err, out.String())
		}
	case <-time.After(time.Minute):
		run.Process.Kill()
		t.Fatalf("microvm run a did not end after Ctrl-C:\n%s", out.String())
	}

	// b's health check (port 9) never passes.
	got, err := l.cli("run", "b", "-f", file, "-q", "--ready-timeout", "40s")
	if err == nil || !strings.Contains(got, "its health check did not pass in time") || strings.Contains(got, "b is ready") {
		t.Errorf("microvm run b with a failing healthCheck: %v\n%s", err, got)
	}
}
