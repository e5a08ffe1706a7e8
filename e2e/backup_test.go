package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/secrets"
	"microvm.dev/microvm/internal/testutil"
)

// TestBackupsOffTheHost: a VM's volume snapshot is sent to a restic
// repository (Debian's restic, on a local path) with the password
// age-encrypted in the file; another host whose file has the VM but never
// ran it lists the backup, restores the volume from it with the same
// bytes (checksum) as the snapshot it came from, and boots the VM on it
// with its data. A backup the repository does not have is refused by
// name.
func TestBackupsOffTheHost(t *testing.T) {
	requireGuestEnv(t)
	testutil.RequireCommand(t, "restic")
	id, keyFile := ageIdentity(t)
	password, err := secrets.Encrypt([]byte("restic-"+randomToken(t)+"\n"), id.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	repo := filepath.Join(t.TempDir(), "restic")
	fleet := func(autostart bool) string {
		return fmt.Sprintf(`defaults: { memory: 256M, stopTimeout: 20s }
vms:
  db:
    index: 1
    autostart: %v
    volumes: [{ name: data, mountPoint: /data, size: 64M }]
    snapshots:
      keep: 2
      backup:
        repository: %s
        keep: 3
        password: |
%s
`, autostart, repo, testutil.Indent(password, "          "))
	}

	a := newDaemonLab(t, "bka")
	a.startDaemon(a.writeFile(fleet(true)), "--age-identity", keyFile)
	a.waitFor("db running on host a", 3*time.Minute, allRunning("db"))
	out, err := a.cli("exec", "db", "--", "sh", "-c", "head -c 4194304 /dev/urandom > /data/blob && sync && sha256sum /data/blob")
	if err != nil {
		t.Fatalf("write data in db: %v\n%s", err, out)
	}
	blobSum := strings.Fields(out)[0]
	out, err = a.cli("-o", "json", "volume", "snapshot", "db")
	if err != nil {
		t.Fatalf("volume snapshot db: %v\n%s", err, out)
	}
	var snaps []apitypes.Snapshot
	if err := json.Unmarshal([]byte(out), &snaps); err != nil || len(snaps) != 1 || snaps[0].Backup == "" {
		t.Fatalf("the snapshot, sent off the host: %v %s", err, out)
	}
	snap := snaps[0]
	sent := fileSum(t, filepath.Join(a.state, "vms", "db", "snapshots", snap.Name+".img"))

	// Host b has db in its file, stopped, and never ran it.
	b := newDaemonLab(t, "bkb")
	b.startDaemon(b.writeFile(fleet(false)), "--age-identity", keyFile)
	out, err = b.cli("-o", "json", "volume", "backups", "db")
	var backups []apitypes.Backup
	if err != nil || json.Unmarshal([]byte(out), &backups) != nil || len(backups) != 1 || backups[0].Snapshot != snap.Name || backups[0].ID != snap.Backup {
		t.Fatalf("volume backups db on host b: %v\n%s", err, out)
	}
	if out, err := b.cli("volume", "restore", "--from", "backup", "db", "data@20200101T000000.000Z"); err == nil || !strings.Contains(out, "no backup of snapshot data@20200101T000000.000Z") {
		t.Errorf("restore of a backup the repository lacks: %v, want it refused by name:\n%s", err, out)
	}
	if out, err := b.cli("volume", "restore", "--from", "backup", "db", snap.Name); err != nil {
		t.Fatalf("volume restore --from backup on host b: %v\n%s", err, out)
	}
	if got := fileSum(t, filepath.Join(b.state, "vms", "db", "data.img")); got != sent {
		t.Errorf("host b's restored volume has sha256 %s, the snapshot sent from host a %s", got, sent)
	}
	if out, err := b.cli("start", "db"); err != nil {
		t.Fatalf("start db on host b: %v\n%s", err, out)
	}
	b.waitFor("db running on host b", 3*time.Minute, allRunning("db"))
	if out, err := b.cli("exec", "db", "--", "sha256sum", "/data/blob"); err != nil || !strings.HasPrefix(out, blobSum) {
		t.Errorf("db's /data/blob on host b: %q (%v), want sha256 %s as written on host a", out, err, blobSum)
	}
}
