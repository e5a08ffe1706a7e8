package backup

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/testutil"
)

// A repository over SFTP, on OpenSSH's own sshd on loopback: restic runs
// `ssh` as root's SSH client would (here a wrapper on the PATH the
// backup's env gives it, standing for root's ~/.ssh/config, with the
// test's key and known hosts): a snapshot sent comes back with the same
// bytes, and a host whose key is not the known one is refused.
func TestSendFetchOverSFTP(t *testing.T) {
	testutil.RequireCommand(t, "restic")
	sshBin := testutil.RequireCommand(t, "ssh")
	sshd := testutil.StartSSHD(t)
	ctx := context.Background()
	dir := t.TempDir()
	wrapper := func(knownHosts string) string {
		bin := filepath.Join(t.TempDir(), "bin")
		os.MkdirAll(bin, 0o755)
		script := fmt.Sprintf("#!/bin/sh\nexec %s -i %s -o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o BatchMode=yes \"$@\"\n",
			sshBin, sshd.ClientKey, knownHosts)
		if err := os.WriteFile(filepath.Join(bin, "ssh"), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		return bin + ":" + os.Getenv("PATH")
	}
	repo := Repo{
		Repository: fmt.Sprintf("sftp://root@127.0.0.1:%d/%s", sshd.Port, filepath.Join(dir, "repo")),
		Password:   "correct horse", Host: "host-a", CacheDir: filepath.Join(dir, "cache"),
		Env: map[string]string{"PATH": wrapper(sshd.KnownHosts)},
	}
	sendAndFetch(t, repo, filepath.Join(dir, "repo", "config"))

	other := repo
	other.Env = map[string]string{"PATH": wrapper(sshd.OtherKnownHosts)}
	// restic says only that ssh ended (ssh's own "Host key verification
	// failed" goes to its standard error).
	if _, err := other.List(ctx, "vm1"); err == nil || !strings.Contains(err.Error(), "unable to start the sftp session") {
		t.Errorf("a server whose host key is not the known one: %v", err)
	}
}

// sendAndFetch sends a sparse snapshot image to repo, checks that the
// repository's config file is at config on the server's side, and that
// the image fetched back has the same bytes.
func sendAndFetch(t *testing.T, repo Repo, config string) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "data@1.img")
	sparseImage(t, src)
	snap := apitypes.Snapshot{Name: "data@20261201T000000.000Z", Volume: "data", Time: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), Size: 64 << 20}
	sent, err := repo.Send(ctx, "vm1", snap, src)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(config); err != nil {
		t.Fatalf("no repository on the server's side: %v", err)
	}
	b, err := repo.Find(ctx, "vm1", sent.Snapshot)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "restored.img")
	if err := repo.Fetch(ctx, b, dst); err != nil {
		t.Fatal(err)
	}
	if sum(t, dst) != sum(t, src) {
		t.Errorf("the image fetched from %s differs from the snapshot's", repo.Repository)
	}
}
