package guestroot

import (
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func newKey(t *testing.T) (ssh.PublicKey, string) {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pk, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk)))
}

// TestAuthorizedKeys: the keys let in are the file's at each check; a
// host is added, then the others are dropped; a line that is not a key is
// refused and changes nothing.
func TestAuthorizedKeys(t *testing.T) {
	r := Root(t.TempDir())
	a, aLine := newKey(t)
	b, bLine := newKey(t)
	if r.IsAuthorized(a) {
		t.Fatal("a key is let in before any were written")
	}
	if err := r.WriteAuthorized([]string{aLine + " host-a"}); err != nil {
		t.Fatal(err)
	}
	if !r.IsAuthorized(a) || r.IsAuthorized(b) {
		t.Fatal("after writing a: want a in, b out")
	}
	if err := r.AddAuthorized([]string{bLine}); err != nil {
		t.Fatal(err)
	}
	if !r.IsAuthorized(a) || !r.IsAuthorized(b) {
		t.Fatal("after adding b: want both in")
	}
	if err := r.WriteAuthorized([]string{bLine}); err != nil {
		t.Fatal(err)
	}
	if r.IsAuthorized(a) || !r.IsAuthorized(b) {
		t.Fatal("after only b: want a out, b in")
	}
	if err := r.AddAuthorized([]string{"ssh-ed25519 not-a-key"}); err == nil {
		t.Fatal("a line that is not a key was taken")
	}
	if keys, _ := r.Authorized(); len(keys) != 1 || keys[0] != bLine {
		t.Errorf("a refused change changed the keys: %q", keys)
	}
}
