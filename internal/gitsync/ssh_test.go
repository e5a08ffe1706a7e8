package gitsync

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"microvm.dev/microvm/internal/testutil"
)

// sshRemote is OpenSSH's own sshd serving a repository on loopback.
type sshRemote struct {
	*testutil.SSHD
	repoDir string
}

func startSSHRemote(t *testing.T, repoDir string) *sshRemote {
	return &sshRemote{SSHD: testutil.StartSSHD(t), repoDir: repoDir}
}

// url is the repository's ssh:// URL logging in as user.
func (r *sshRemote) url(user string) string {
	return fmt.Sprintf("ssh://%s@127.0.0.1:%d%s", user, r.Port, r.repoDir)
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
		m, err := Open(Options{URL: url, Branch: "main", Dir: filepath.Join(t.TempDir(), "mirror"), SSHKeyFile: r.ClientKey, KnownHostsFile: knownHosts})
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
	c, err := fetch(r.url("root"), r.KnownHosts)
	if err != nil || c.Hash != head {
		t.Fatalf("fetch as root with the right host key: %+v, %v", c, err)
	}
	if _, err := fetch(r.url("git"), r.KnownHosts); err == nil {
		t.Error("the fetch logged in as git, a user this sshd does not have: the URL's user was not used")
	}
	if _, err := fetch(r.url("root"), r.OtherKnownHosts); err == nil || !strings.Contains(err.Error(), "key mismatch") {
		t.Errorf("a known hosts file with another key for the host: %v", err)
	}
	if known, host, err := HostKnown(r.KnownHosts, r.url("root")); !known || err != nil || host != fmt.Sprintf("127.0.0.1:%d", r.Port) {
		t.Errorf("HostKnown(the right file) = %v %q %v", known, host, err)
	}
	if known, _, err := HostKnown(r.KnownHosts, "ssh://deploy@git.example:2222/infra.git"); known || err != nil {
		t.Errorf("HostKnown(another host) = %v %v", known, err)
	}
	// The deploy key revoked: refused.
	if err := os.WriteFile(r.Authorized, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := fetch(r.url("root"), r.KnownHosts); err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
		t.Errorf("a revoked deploy key: %v", err)
	}
}
