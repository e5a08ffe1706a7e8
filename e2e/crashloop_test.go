package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"microvm.dev/microvm/internal/apitypes"
)

// TestCrashLoop kills a VM every time it comes up: after five exits within
// the crash-loop window the daemon stops restarting it and reports it
// failed, with the reason and its last console lines; an explicit start
// clears that.
func TestCrashLoop(t *testing.T) {
	requireGuestEnv(t)
	l := newDaemonLab(t, "crl")
	file := filepath.Join(l.state, "infra.yaml")
	os.WriteFile(file, []byte("vms: { z: { index: 1, memory: 256M, stopTimeout: 5s } }\n"), 0o644)
	l.startDaemon(file)
	lastPID := 0
	for kills := 0; kills < 5; kills++ {
		vms := l.waitFor("z running again", 2*time.Minute, func(v map[string]apitypes.VMStatus) bool {
			return v["z"].State == apitypes.Running && v["z"].PID != lastPID && v["z"].PID != 0
		})
		lastPID = vms["z"].PID
		syscall.Kill(lastPID, syscall.SIGKILL)
	}
	vms := l.waitFor("z failed", time.Minute, func(v map[string]apitypes.VMStatus) bool {
		return v["z"].State == apitypes.Failed
	})
	if vms["z"].Restarts != 4 || !strings.Contains(vms["z"].Failure, "crash loop: exited 5 times") || !strings.Contains(vms["z"].Failure, "microvm-ready vm=z") {
		t.Errorf("failed status: restarts %d, failure %q", vms["z"].Restarts, vms["z"].Failure)
	}
	time.Sleep(3 * time.Second)
	if st := l.list()["z"]; st.State != apitypes.Failed || st.PID != 0 {
		t.Errorf("a failed VM was restarted anyway: %+v", st)
	}
	if out, err := l.cli("start", "z"); err != nil || !strings.Contains(out, "z: running") {
		t.Fatalf("start after a crash loop: %v\n%s", err, out)
	}
	if out, err := l.cli("stop", "z"); err != nil {
		t.Errorf("stop z: %v\n%s", err, out)
	}
}
