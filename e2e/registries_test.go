package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"microvm.dev/microvm/internal/secrets"
	"microvm.dev/microvm/internal/testutil"
)

// TestPrivateRegistryLogins: Debian's docker-registry with htpasswd
// logins. A pull without a login is refused by the registry (401) and the
// error says so; the daemon pulls with host.registries' login, its
// password age-encrypted in the file and decrypted with the host's
// identity, and boots the image.
func TestPrivateRegistryLogins(t *testing.T) {
	requireGuestEnv(t)
	password := "pw-" + randomToken(t)
	reg := startRegistryWithLogin(t, "deploy", password)
	ref := reg.push(t, "private/app:1", v1.Config{Entrypoint: []string{"/bin/sh", "-c", "exec sleep 86400"}},
		baseLayer(t), filesLayer(t, map[string]string{"etc/image": "private\n"}))

	state := t.TempDir()
	out, err := exec.Command(filepath.Join(shared.initDir, "microvm"), "--state-dir", state, "image", "pull", ref).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "UNAUTHORIZED") {
		t.Errorf("a pull without a login: %v, want the registry's 401:\n%s", err, out)
	}

	id, keyFile := ageIdentity(t)
	armored, err := secrets.Encrypt([]byte(password+"\n"), id.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	l := newDaemonLab(t, "reg")
	file := l.writeFile(fmt.Sprintf(`host:
  registries:
    %q:
      username: deploy
      password: |
%s
defaults: { memory: 256M, stopTimeout: 10s }
vms:
  app: { index: 1, image: %q }
`, reg.addr, testutil.Indent(armored, "        "), ref))
	if strings.Contains(string(mustRead(t, file)), password) {
		t.Fatal("the password is in the file in clear")
	}
	l.startDaemon(file, "--age-identity", keyFile)
	l.waitFor("app running", 3*time.Minute, allRunning("app"))
	if out, err := l.cli("exec", "app", "--", "cat", "/etc/image"); err != nil || strings.TrimSpace(out) != "private" {
		t.Errorf("app's /etc/image = %q (%v), want the private image's", out, err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
