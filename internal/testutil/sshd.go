package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// SSHD is OpenSSH's own sshd on a free loopback port with a configuration
// of the test's own: its host key, a client key it lets root in with, a
// known_hosts file for it and one naming another key for it.
type SSHD struct {
	Port int
	// Dir holds its files.
	Dir string
	// HostKey is its host key, ClientKey the key it lets in (Authorized
	// is its authorized_keys file; empty it, and the key is refused).
	HostKey, ClientKey, Authorized string
	// KnownHosts names its host key; OtherKnownHosts another key for it.
	KnownHosts, OtherKnownHosts string
}

// StartSSHD starts sshd (Debian's openssh-server; scripts/test.sh installs
// it and keeps its service off), stopped when the test ends.
func StartSSHD(t *testing.T) *SSHD {
	t.Helper()
	RequireRoot(t)
	sshd := RequireCommand(t, "sshd")
	RequireCommand(t, "ssh-keygen")
	dir := t.TempDir()
	s := &SSHD{Port: FreePort(t), Dir: dir, HostKey: filepath.Join(dir, "host_key"), ClientKey: filepath.Join(dir, "client_key"),
		Authorized: filepath.Join(dir, "authorized_keys"), KnownHosts: filepath.Join(dir, "known_hosts"), OtherKnownHosts: filepath.Join(dir, "other_known_hosts")}
	keygen := func(path string) {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
	}
	keygen(s.HostKey)
	keygen(s.ClientKey)
	keygen(filepath.Join(dir, "other_host_key"))
	pub := func(path string) string {
		b, err := os.ReadFile(path + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	host := fmt.Sprintf("[127.0.0.1]:%d", s.Port)
	write := func(path, body string) {
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(s.Authorized, pub(s.ClientKey)+"\n")
	write(s.KnownHosts, host+" "+pub(s.HostKey)+"\n")
	write(s.OtherKnownHosts, host+" "+pub(filepath.Join(dir, "other_host_key"))+"\n")
	conf := filepath.Join(dir, "sshd_config")
	write(conf, fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
AuthorizedKeysFile %s
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile %s
LogLevel VERBOSE
Subsystem sftp internal-sftp
`, s.Port, s.HostKey, s.Authorized, filepath.Join(dir, "sshd.pid")))
	os.MkdirAll("/run/sshd", 0o755) // sshd's privilege separation directory
	startServer(t, "sshd", exec.Command(sshd, "-D", "-e", "-f", conf), s.Port)
	return s
}
