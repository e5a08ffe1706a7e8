package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"filippo.io/age"

	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/secrets"
	"microvm.dev/microvm/internal/testutil"
)

// TestSecretsReachOnlyTheirVM gives a VM a file from an age-encrypted
// secret in its config: the guest reads it with its mode and owner, its
// initramfs is gone once the guest is up, and the plaintext is nowhere in
// the host's state directory (logs, console, run records, volumes) nor in
// another VM's initramfs.
func TestSecretsReachOnlyTheirVM(t *testing.T) {
	requireGuestEnv(t)
	id, keyFile := ageIdentity(t)
	ids, err := secrets.LoadIdentities([]string{keyFile}, false)
	if err != nil {
		t.Fatal(err)
	}
	plaintext := "db-password-" + randomToken(t)
	armored, err := secrets.Encrypt([]byte(plaintext+"\n"), id.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	src := `vms:
  vm1:
    index: 1
    memory: 512M
    volumes: [ { name: data, mountPoint: /mnt/storage, size: 1G } ]
    secrets:
      - path: /run/secrets/db/password
        mode: "0440"
        owner: nobody
        age: |
` + testutil.Indent(armored, "          ") + `
  vm2: { index: 2, memory: 512M }
`
	ns, cfg := netLab(t, "sec", src)
	env := newEnv(t, ns)
	env.Identities = ids

	p, r := boot(t, env, cfg.VM("vm1"))
	if _, err := os.Stat(p.Launch.Initrd); !os.IsNotExist(err) {
		t.Errorf("the VM's initramfs (with its secret) is still on the host after boot: %v", err)
	}
	c := sshTo(t, ns, p)
	if got := run(t, c, "cat /run/secrets/db/password"); got != plaintext {
		t.Errorf("secret in the guest = %q", got)
	}
	if got := run(t, c, "stat -c '%a %U' /run/secrets/db/password"); got != "440 nobody" {
		t.Errorf("secret mode and owner = %q, want 440 nobody", got)
	}
	// In memory: a tmpfs, or the root overlay whose upper layer is one.
	if got := run(t, c, "stat -f -c %T /run/secrets/db"); got != "tmpfs" && got != "overlayfs" {
		t.Errorf("the secret is on a %q filesystem, not in memory", got)
	}
	stop(t, r)

	// The secret as raw bytes and as the guest spec's JSON carries it.
	leaks := func(b []byte) bool {
		return bytes.Contains(b, []byte(plaintext)) || bytes.Contains(b, []byte(base64.StdEncoding.EncodeToString([]byte(plaintext+"\n"))))
	}
	// Nothing the host keeps holds the plaintext (the store is the shared,
	// read-only one: the guest cannot write there).
	filepath.WalkDir(env.StateDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		if b, err := os.ReadFile(path); err == nil && leaks(b) {
			t.Errorf("the plaintext secret is in %s on the host", path)
		}
		return nil
	})
	// vm1's initramfs, made again and not booted, holds it (so the search
	// above finds it where it is); vm2's holds nothing of it.
	for name, want := range map[string]bool{"vm1": true, "vm2": false} {
		p, err := launch.Prepare(context.Background(), env, cfg.VM(name), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p.Launch.Initrd)
		if err != nil || leaks(b) != want {
			t.Errorf("%s's initramfs (%v) holds vm1's secret: %v, want %v", name, err, leaks(b), want)
		}
		os.Remove(p.Launch.Initrd)
	}
	testutil.Report(t, testutil.FaultResult{Fault: "an age-encrypted secret given to one VM of two", Trials: 1,
		Result: "read in the guest with its mode and owner, in memory; its initramfs removed once loaded; the plaintext in no host file and not in the other VM's initramfs"})
}

// ageIdentity makes a host's age identity and the file it is kept in.
func ageIdentity(t *testing.T) (*age.X25519Identity, string) {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "age.key")
	if err := os.WriteFile(keyFile, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return id, keyFile
}
