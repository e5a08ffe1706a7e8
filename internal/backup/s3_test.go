package backup

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"microvm.dev/microvm/internal/testutil"
)

// A repository on an S3-compatible server (Versity's gateway, versitygw,
// on loopback, serving a directory): restic makes the bucket and the
// repository on the first send, with the keys the backup's env gives it
// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, as a host keeps them in
// snapshots.backup.env); a snapshot sent comes back with the same bytes;
// a wrong secret key is refused with the server's reason and makes
// nothing.
func TestSendFetchOverS3(t *testing.T) {
	testutil.RequireCommand(t, "restic")
	s3 := testutil.StartS3(t)
	ctx := context.Background()
	dir := t.TempDir()
	repo := Repo{
		Repository: "s3:" + s3.Endpoint + "/microvm-backups/host-a",
		Password:   "correct horse", Host: "host-a", CacheDir: filepath.Join(dir, "cache"),
		Env: map[string]string{"AWS_ACCESS_KEY_ID": s3.AccessKey, "AWS_SECRET_ACCESS_KEY": s3.SecretKey},
	}

	wrong := repo
	wrong.Env = map[string]string{"AWS_ACCESS_KEY_ID": s3.AccessKey, "AWS_SECRET_ACCESS_KEY": "not the secret"}
	err := wrong.Ensure(ctx)
	t.Logf("a wrong secret key: %v", err)
	if err == nil || !strings.Contains(err.Error(), "signature") {
		t.Errorf("a wrong secret key: %v, want the server's refusal", err)
	}
	if entries, _ := os.ReadDir(s3.Dir); len(entries) != 0 {
		t.Errorf("a refused key made %d buckets", len(entries))
	}

	sendAndFetch(t, repo, filepath.Join(s3.Dir, "microvm-backups", "host-a", "config"))
	if _, err := wrong.List(ctx, "vm1"); err == nil || !strings.Contains(err.Error(), "signature") {
		t.Errorf("a wrong secret key on an existing repository: %v", err)
	}
}
