package gitsync

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	pemlib "encoding/pem"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"
	"golang.org/x/crypto/ssh"

	"microvm.dev/microvm/internal/testutil"
)

// These tests use real repositories on disk: a bare remote made with the
// git command and a working clone that commits and pushes to it.

type repos struct {
	remote, work string
}

func gitRun(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=Ann", "GIT_AUTHOR_EMAIL=ann@example.com",
		"GIT_COMMITTER_NAME=Ann", "GIT_COMMITTER_EMAIL=ann@example.com", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_SYSTEM=/dev/null")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func newRepos(t *testing.T) repos {
	t.Helper()
	testutil.RequireCommand(t, "git")
	dir := t.TempDir()
	r := repos{remote: filepath.Join(dir, "remote.git"), work: filepath.Join(dir, "work")}
	gitRun(t, dir, "init", "-q", "--bare", "-b", "main", r.remote)
	gitRun(t, dir, "clone", "-q", r.remote, r.work)
	gitRun(t, r.work, "checkout", "-q", "-b", "main")
	return r
}

func (r repos) commit(t *testing.T, file, content, msg string) string {
	t.Helper()
	os.WriteFile(filepath.Join(r.work, file), []byte(content), 0o644)
	gitRun(t, r.work, "add", file)
	gitRun(t, r.work, "commit", "-q", "-m", msg)
	gitRun(t, r.work, "push", "-q", "-f", "origin", "main")
	return gitRun(t, r.work, "rev-parse", "HEAD")
}

func TestFetchReadAndForcePush(t *testing.T) {
	r := newRepos(t)
	first := r.commit(t, "infra.yaml", "vms: {}\n", "first")
	m, err := Open(Options{URL: r.remote, Branch: "main", Dir: filepath.Join(t.TempDir(), "mirror")})
	if err != nil {
		t.Fatal(err)
	}
	c, err := m.Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if c.Hash != first || c.Message != "first" || c.Author != "Ann <ann@example.com>" || c.Signed {
		t.Errorf("commit = %+v", c)
	}
	if b, err := m.ReadFile(c.Hash, "infra.yaml"); err != nil || string(b) != "vms: {}\n" {
		t.Errorf("ReadFile = %q, %v", b, err)
	}
	if _, err := m.ReadFile(c.Hash, "missing.yaml"); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
	// A rewritten branch is followed to its new head.
	r.commit(t, "infra.yaml", "vms: { a: { index: 1 } }\n", "second")
	gitRun(t, r.work, "reset", "-q", "--hard", first)
	rewritten := r.commit(t, "infra.yaml", "vms: { b: { index: 2 } }\n", "rewritten")
	c, err = m.Fetch(context.Background())
	if err != nil || c.Hash != rewritten {
		t.Errorf("after a force push: %+v, %v (want %s)", c, err, rewritten)
	}
	// A mirror reopened later keeps working.
	m2, err := Open(Options{URL: r.remote, Branch: "main", Dir: m.o.Dir})
	if err != nil {
		t.Fatal(err)
	}
	if c2, err := m2.Fetch(context.Background()); err != nil || c2.Hash != rewritten {
		t.Errorf("reopened: %+v %v", c2, err)
	}
}

func TestUnreachableRemote(t *testing.T) {
	m, err := Open(Options{URL: filepath.Join(t.TempDir(), "nothing.git"), Dir: filepath.Join(t.TempDir(), "mirror")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Fetch(context.Background()); err == nil || !strings.Contains(err.Error(), "git fetch") {
		t.Errorf("err = %v", err)
	}
}

func TestRedact(t *testing.T) {
	if got := redact("https://user:secret@example.com/repo.git"); strings.Contains(got, "secret") {
		t.Errorf("redact = %s", got)
	}
}

// signedCommit commits with go-git in the working clone, signed by signKey
// (OpenPGP) or signer (SSH), and pushes.
func (r repos) signedCommit(t *testing.T, content string, signKey *openpgp.Entity, signer git.Signer) string {
	t.Helper()
	os.WriteFile(filepath.Join(r.work, "infra.yaml"), []byte(content), 0o644)
	repo, err := git.PlainOpen(r.work)
	if err != nil {
		t.Fatal(err)
	}
	wt, _ := repo.Worktree()
	wt.Add("infra.yaml")
	h, err := wt.Commit("signed", &git.CommitOptions{
		Author:  &object.Signature{Name: "Ann", Email: "ann@example.com", When: time.Now()},
		SignKey: signKey, Signer: signer,
	})
	if err != nil {
		t.Fatal(err)
	}
	gitRun(t, r.work, "push", "-q", "-f", "origin", "main")
	return h.String()
}

func armoredPublic(t *testing.T, e *openpgp.Entity) string {
	var buf bytes.Buffer
	w, _ := armor.Encode(&buf, openpgp.PublicKeyType, nil)
	if err := e.Serialize(w); err != nil {
		t.Fatal(err)
	}
	w.Close()
	return buf.String()
}

func TestOpenPGPSignatures(t *testing.T) {
	r := newRepos(t)
	unsigned := r.commit(t, "infra.yaml", "vms: {}\n", "unsigned")
	trusted, err := openpgp.NewEntity("Deployer", "", "deploy@example.com", nil)
	if err != nil {
		t.Fatal(err)
	}
	stranger, _ := openpgp.NewEntity("Stranger", "", "x@example.com", nil)
	keyFile := filepath.Join(t.TempDir(), "keys.asc")
	os.WriteFile(keyFile, []byte(armoredPublic(t, trusted)), 0o644)
	keys, err := LoadKeys(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := Open(Options{URL: r.remote, Dir: filepath.Join(t.TempDir(), "mirror")})
	m.Fetch(context.Background())
	if _, err := m.Verify(unsigned, keys); !errors.Is(err, ErrUnsigned) {
		t.Errorf("unsigned: %v", err)
	}
	good := r.signedCommit(t, "vms: { a: { index: 1 } }\n", trusted, nil)
	if c, _ := m.Fetch(context.Background()); c.Hash != good || !c.Signed {
		t.Fatalf("fetched %+v", c)
	}
	if who, err := m.Verify(good, keys); err != nil || !strings.Contains(who, "deploy@example.com") {
		t.Errorf("trusted signature: %q, %v", who, err)
	}
	bad := r.signedCommit(t, "vms: { b: { index: 2 } }\n", stranger, nil)
	m.Fetch(context.Background())
	if _, err := m.Verify(bad, keys); err == nil {
		t.Error("a stranger's signature was accepted")
	}
}

// sshSigner signs like `git commit -S` with gpg.format=ssh.
type sshSigner struct{ key ssh.Signer }

func (s sshSigner) Sign(msg io.Reader) ([]byte, error) {
	b, _ := io.ReadAll(msg)
	sum := sha512.Sum512(b)
	sig, err := s.key.Sign(rand.Reader, SSHSignedData("git", "sha512", sum[:]))
	if err != nil {
		return nil, err
	}
	blob := append([]byte("SSHSIG"), ssh.Marshal(struct {
		Version   uint32
		PublicKey []byte
		Namespace string
		Reserved  string
		HashAlg   string
		Signature []byte
	}{1, s.key.PublicKey().Marshal(), "git", "", "sha512", ssh.Marshal(sig)})...)
	enc := base64.StdEncoding.EncodeToString(blob)
	var out strings.Builder
	out.WriteString("-----BEGIN SSH SIGNATURE-----\n")
	for len(enc) > 70 {
		out.WriteString(enc[:70] + "\n")
		enc = enc[70:]
	}
	out.WriteString(enc + "\n-----END SSH SIGNATURE-----\n")
	return []byte(out.String()), nil
}

func newSSHSigner(t *testing.T) (ssh.Signer, string, ed25519.PrivateKey) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.PublicKey()))), priv
}

func TestSSHSignatures(t *testing.T) {
	r := newRepos(t)
	r.commit(t, "infra.yaml", "vms: {}\n", "first")
	trusted, trustedPub, trustedPriv := newSSHSigner(t)
	stranger, _, _ := newSSHSigner(t)
	allowed := filepath.Join(t.TempDir(), "allowed_signers")
	os.WriteFile(allowed, []byte("# who may deploy\ndeploy@example.com namespaces=\"git\" "+trustedPub+"\n"), 0o644)
	keys, err := LoadKeys(allowed)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := Open(Options{URL: r.remote, Dir: filepath.Join(t.TempDir(), "mirror")})
	good := r.signedCommit(t, "vms: { a: { index: 1 } }\n", nil, sshSigner{trusted})
	m.Fetch(context.Background())
	if who, err := m.Verify(good, keys); err != nil || who != "deploy@example.com" {
		t.Errorf("trusted: %q, %v", who, err)
	}
	// A commit signed by git itself (gpg.format=ssh, through ssh-keygen).
	if _, err := exec.LookPath("ssh-keygen"); err == nil {
		pem, err := ssh.MarshalPrivateKey(trustedPriv, "")
		if err != nil {
			t.Fatal(err)
		}
		keyFile := filepath.Join(t.TempDir(), "id_ed25519")
		os.WriteFile(keyFile, pemlib.EncodeToMemory(pem), 0o600)
		os.WriteFile(keyFile+".pub", ssh.MarshalAuthorizedKey(trusted.PublicKey()), 0o644)
		os.WriteFile(filepath.Join(r.work, "infra.yaml"), []byte("vms: { c: { index: 3 } }\n"), 0o644)
		gitRun(t, r.work, "add", "infra.yaml")
		gitRun(t, r.work, "-c", "gpg.format=ssh", "-c", "user.signingkey="+keyFile, "commit", "-q", "-S", "-m", "signed by git")
		gitRun(t, r.work, "push", "-q", "-f", "origin", "main")
		c, err := m.Fetch(context.Background())
		if err != nil || !c.Signed {
			t.Fatalf("git-signed commit: %+v %v", c, err)
		}
		if who, err := m.Verify(c.Hash, keys); err != nil || who != "deploy@example.com" {
			t.Errorf("a signature made by git and ssh-keygen: %q, %v", who, err)
		}
	}
	bad := r.signedCommit(t, "vms: { b: { index: 2 } }\n", nil, sshSigner{stranger})
	m.Fetch(context.Background())
	if _, err := m.Verify(bad, keys); err == nil || !strings.Contains(err.Error(), "not an allowed signer") {
		t.Errorf("stranger: %v", err)
	}
	if _, err := LoadKeys(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("missing key file accepted")
	}
}
