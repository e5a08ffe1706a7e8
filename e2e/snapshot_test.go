package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/snapshot"
)

// TestVolumeSnapshots snapshots the volume of a running VM (synced, paused,
// copied, resumed), changes the data, refuses a restore while the VM runs,
// restores it stopped, and finds the snapshotted data after the restart;
// the state before the restore is kept as a snapshot too.
func TestVolumeSnapshots(t *testing.T) {
	requireGuestEnv(t)
	l := newDaemonLab(t, "snp")
	file := filepath.Join(l.state, "infra.yaml")
	os.WriteFile(file, []byte(`vms:
  s: { index: 1, vcpu: 1, memory: 256M, stopTimeout: 10s, snapshots: { keep: 5 },
       volumes: [{ name: data, mountPoint: /data, size: 64M }] }
`), 0o644)
	l.startDaemon(file)
	l.waitFor("s running", 3*time.Minute, allRunning("s"))
	exec := func(cmd string) string {
		t.Helper()
		out, err := l.cli("exec", "s", "--", "sh", "-c", cmd)
		if err != nil {
			t.Fatalf("%s: %v %s", cmd, err, out)
		}
		return strings.TrimSpace(out)
	}
	exec("echo one > /data/file")
	out, err := l.cli("volume", "snapshot", "s", "-o", "json")
	var snaps []snapshot.Snapshot
	if err != nil || json.Unmarshal([]byte(out), &snaps) != nil || len(snaps) != 1 || snaps[0].Volume != "data" {
		t.Fatalf("snapshot: %v\n%s", err, out)
	}
	// The guest was resumed: it still answers and writes.
	exec("echo two > /data/file && sync")
	if out, err := l.cli("volume", "restore", "s", snaps[0].Name); err == nil || !strings.Contains(out, "stop it first") {
		t.Errorf("restore of a running VM: %v %s", err, out)
	}
	if out, err := l.cli("stop", "s"); err != nil {
		t.Fatalf("stop: %v %s", err, out)
	}
	if out, err := l.cli("volume", "restore", "s", snaps[0].Name); err != nil || !strings.Contains(out, "restored "+snaps[0].Name) {
		t.Fatalf("restore: %v %s", err, out)
	}
	if out, err := l.cli("start", "s"); err != nil {
		t.Fatalf("start: %v %s", err, out)
	}
	l.waitFor("s running again", 3*time.Minute, func(m map[string]apitypes.VMStatus) bool { return m["s"].State == apitypes.Running })
	if got := exec("cat /data/file"); got != "one" {
		t.Errorf("after the restore the file holds %q, want the snapshot's %q", got, "one")
	}
	out, _ = l.cli("volume", "snapshots", "s", "-o", "json")
	json.Unmarshal([]byte(out), &snaps)
	if len(snaps) != 2 {
		t.Errorf("snapshots after the restore: %s", out)
	}
	if out, err := l.cli("volume", "restore", "s", "../../etc@x"); err == nil || !strings.Contains(out, "not a snapshot name") {
		t.Errorf("a hostile snapshot name: %v %s", err, out)
	}
}
