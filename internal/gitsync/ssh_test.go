package gitsync

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"microvm.dev/microvm/internal/testutil"
)

// sshRemote is OpenSSH's own sshd serving a repository on loopback: its
// host key, the deploy key it authorizes, and a known_hosts file for it.
type sshRemote struct {
	port                     int
	dir, hostKey, deployKey  string
	authorized, knownHosts   string
	otherKnownHosts, repoDir string
}

// startSSHRemote starts sshd (Debian's openssh-server; scripts/test.sh
// installs it and keeps its service off) on a free loopback port with a
// configuration of the test's own, stopped when the test ends.
func startSSHRemote(t *testing.T, repoDir string) *sshRemote {
	t.Helper()
	testutil.RequireRoot(t)
	sshd := testutil.RequireCommand(t, "sshd")
	testutil.RequireCommand(t, "ssh-keygen")
	dir := t.TempDir()
	r := &sshRemote{port: testutil.FreePort(t), dir: dir, hostKey: filepath.Join(dir, "host_key"), deployKey: filepath.Join(dir, "deploy_key"),
		authorized: filepath.Join(dir, "authorized_keys"), knownHosts: filepath.Join(dir, "known_hosts"), otherKnownHosts: filepath.Join(dir, "other_known_hosts"), repoDir: repoDir}
	keygen := func(path string) {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
	}
	keygen(r.hostKey)
	keygen(r.deployKey)
	keygen(filepath.Join(dir, "other_host_key"))
	pub := func(path string) string {
		b, err := os.ReadFile(path + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	host := fmt.Sprintf("[127.0.0.1]:%d", r.port)
	write := func(path, body string) {
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(r.authorized, pub(r.deployKey)+"\n")
	write(r.knownHosts, host+" "+pub(r.hostKey)+"\n")
	write(r.otherKnownHosts, host+" "+pub(filepath.Join(dir, "other_host_key"))+"\n")
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
`, r.port, r.hostKey, r.authorized, filepath.Join(dir, "sshd.pid")))
	os.MkdirAll("/run/sshd", 0o755) // sshd's privilege separation directory
	cmd := exec.Command(sshd, "-D", "-e", "-f", conf)
	logf, err := os.Create(filepath.Join(dir, "sshd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("sshd's log:\n%s", b)
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", r.port)); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("sshd did not listen")
		}
	}
	return r
}

// url is the repository's ssh:// URL logging in as user.
func (r *sshRemote) url(user string) string {
	return fmt.Sprintf("ssh://%s@127.0.0.1:%d%s", user, r.port, r.repoDir)
}

// GitOps over SSH against OpenSSH's own sshd: the URL's user logs in (not
// a fixed "git"), the host key is checked against the known hosts file
// given, and a revoked deploy key is refused; doctor's check says whether
// the file holds the remote's key.
func TestFetchOverOpenSSH(t *testing.T) {
	repo := newRepos(t)
	head := repo.commit(t, "infra.yaml", "vms: {}\n", "first")
	r := startSSHRemote(t, repo.remote)
	fetch := func(url, knownHosts string) (Commit, error) {
		m, err := Open(Options{URL: url, Branch: "main", Dir: filepath.Join(t.TempDir(), "mirror"), SSHKeyFile: r.deployKey, KnownHostsFile: knownHosts})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return m.Fetch(ctx)
	}
	// root is the user of this sshd with a shell and git: any user but
	// git shows the URL's user is the one that logs in.
	if SSHUser(r.url("root")) != "root" || SSHUser("git@github.com:org/infra.git") != "git" || SSHUser("https://example.com/infra.git") != "git" {
		t.Errorf("SSHUser: %q", SSHUser(r.url("root")))
	}
	c, err := fetch(r.url("root"), r.knownHosts)
	if err != nil || c.Hash != head {
		t.Fatalf("fetch as root with the right host key: %+v, %v", c, err)
	}
	if _, err := fetch(r.url("git"), r.knownHosts); err == nil {
		t.Error("the fetch logged in as git, a user this sshd does not have: the URL's user was not used")
	}
	if _, err := fetch(r.url("root"), r.otherKnownHosts); err == nil || !strings.Contains(err.Error(), "key mismatch") {
		t.Errorf("a known hosts file with another key for the host: %v", err)
	}
	if known, host, err := HostKnown(r.knownHosts, r.url("root")); !known || err != nil || host != fmt.Sprintf("127.0.0.1:%d", r.port) {
		t.Errorf("HostKnown(the right file) = %v %q %v", known, host, err)
	}
	if known, _, err := HostKnown(r.knownHosts, "ssh://deploy@git.example:2222/infra.git"); known || err != nil {
		t.Errorf("HostKnown(another host) = %v %v", known, err)
	}
	// The deploy key revoked: refused.
	if err := os.WriteFile(r.authorized, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := fetch(r.url("root"), r.knownHosts); err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
		t.Errorf("a revoked deploy key: %v", err)
	}
}
