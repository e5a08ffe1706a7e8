package e2e

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/testutil"
)

// TestHostShutdownPath runs what the host's shutdown runs
// (microvm-guests.service's ExecStop, `microvm stop --all`) against the
// real daemon: every VM stops cleanly at once, with data written but never
// synced by the guest on its volume, and every volume is left clean (no
// journal recovery needed). After the "reboot" (the daemon stopped and a
// new one started with the same file) the VMs boot again with their data.
func TestHostShutdownPath(t *testing.T) {
	requireGuestEnv(t)
	l := newDaemonLab(t, "hsd")
	file := l.writeFile(twoVMsWithData)
	l.startDaemon(file)
	l.waitFor("a and b running", 3*time.Minute, allRunning("a", "b"))
	for _, vm := range []string{"a", "b"} {
		// Written, never synced: only a clean shutdown gets it to the disk.
		if out, err := l.cli("exec", vm, "--", "sh", "-c", "echo kept-"+vm+" > /data/unsynced"); err != nil {
			t.Fatalf("%s: %v\n%s", vm, err, out)
		}
	}
	t0 := time.Now()
	out, err := l.cli(guestsUnitStop(t, "MICROVM_SAVE_ON_SHUTDOWN=false")...)
	if err != nil || !strings.Contains(out, "a: stopped in") || !strings.Contains(out, "b: stopped in") {
		t.Fatalf("stop --all: %v\n%s", err, out)
	}
	t.Logf("stop --all: %s in %s", strings.ReplaceAll(strings.TrimSpace(out), "\n", "; "), time.Since(t0).Round(time.Millisecond))
	for name, st := range l.list() {
		if st.State != apitypes.Stopped || st.PID != 0 {
			t.Errorf("%s after stop --all: %+v", name, st)
		}
	}
	for _, vm := range []string{"a", "b"} {
		if info := dumpe2fs(t, filepath.Join(l.state, "vms", vm, "data.img")); !strings.Contains(info, "Filesystem state:         clean") || strings.Contains(info, "needs_recovery") {
			t.Errorf("%s's volume after the shutdown path:\n%s", vm, info)
		}
	}

	// The host comes back: a new daemon with the same file boots them.
	l.daemon.Process.Signal(syscall.SIGTERM)
	l.daemon.Wait()
	l.startDaemon(file)
	l.waitFor("a and b running after the reboot", 3*time.Minute, allRunning("a", "b"))
	lost := int64(0)
	for _, vm := range []string{"a", "b"} {
		if out, err := l.cli("exec", vm, "--", "cat", "/data/unsynced"); err != nil || strings.TrimSpace(out) != "kept-"+vm {
			t.Errorf("%s after the reboot: %q %v", vm, out, err)
			lost += int64(len("kept-" + vm + "\n"))
		}
	}
	testutil.Report(t, testutil.FaultResult{Fault: "the host shutting down with data the guests never synced", Trials: 2, LostBytes: lost,
		Result: "microvm stop --all (microvm-guests.service) stops every VM cleanly: volumes clean, the data there, the VMs back after the reboot"})
}
