package secrets

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
	"golang.org/x/crypto/ssh"
)

// keys writes an age identity file and an OpenSSH ed25519 private key (as
// a host's /etc/ssh/ssh_host_ed25519_key) and returns their paths.
func keys(t *testing.T) (ageKey, sshKey string) {
	t.Helper()
	dir := t.TempDir()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	ageKey = filepath.Join(dir, "age.key")
	os.WriteFile(ageKey, []byte("# created: now\n"+id.String()+"\n"), 0o600)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(priv, "host")
	if err != nil {
		t.Fatal(err)
	}
	sshKey = filepath.Join(dir, "ssh_host_ed25519_key")
	os.WriteFile(sshKey, pem.EncodeToMemory(block), 0o600)
	return ageKey, sshKey
}

func TestRoundTripWithAgeAndSSHKeys(t *testing.T) {
	ageKey, sshKey := keys(t)
	ids, err := LoadIdentities([]string{ageKey, sshKey, filepath.Join(t.TempDir(), "absent")}, true)
	if err != nil || len(ids) != 2 {
		t.Fatalf("identities: %v (%d)", err, len(ids))
	}
	if !strings.HasPrefix(ids[0].Recipient, "age1") || !strings.HasPrefix(ids[1].Recipient, "ssh-ed25519 ") {
		t.Fatalf("recipients %q, %q", ids[0].Recipient, ids[1].Recipient)
	}
	for _, id := range ids {
		r, err := ParseRecipient(id.Recipient)
		if err != nil {
			t.Fatal(err)
		}
		armored, err := Encrypt([]byte("s3cret\n"), r)
		if err != nil {
			t.Fatal(err)
		}
		if err := Check(armored); err != nil {
			t.Fatalf("Check(%q): %v", armored, err)
		}
		if strings.Contains(armored, "s3cret") {
			t.Fatal("the plaintext shows in the ciphertext")
		}
		got, err := Decrypt(armored, []Identity{id})
		if err != nil || string(got) != "s3cret\n" {
			t.Fatalf("decrypt with %s: %q, %v", id.Path, got, err)
		}
	}
}

func TestDecryptFailuresSayWhy(t *testing.T) {
	ageKey, sshKey := keys(t)
	ids, _ := LoadIdentities([]string{sshKey}, false)
	other, _ := age.GenerateX25519Identity()
	armored, _ := Encrypt([]byte("x"), other.Recipient())
	if _, err := Decrypt(armored, ids); err == nil || !strings.Contains(err.Error(), "not encrypted to this host's keys (ssh-ed25519 ") {
		t.Errorf("wrong key: %v", err)
	}
	if _, err := Decrypt(armored, nil); err == nil || !strings.Contains(err.Error(), "no age identity") {
		t.Errorf("no key: %v", err)
	}
	for _, bad := range []string{"plain text", "-----BEGIN AGE ENCRYPTED FILE-----\nnot base64 !\n-----END AGE ENCRYPTED FILE-----"} {
		if err := Check(bad); err == nil {
			t.Errorf("Check(%q) passed", bad)
		}
	}
	if _, err := LoadIdentities([]string{filepath.Join(t.TempDir(), "absent")}, false); err == nil {
		t.Error("a named identity file that does not exist was ignored")
	}
	os.WriteFile(ageKey, []byte("AGE-SECRET-KEY-1NOTAKEY\n"), 0o600)
	if _, err := LoadIdentities([]string{ageKey}, true); err == nil || !strings.Contains(err.Error(), ageKey) {
		t.Errorf("a damaged identity file: %v", err)
	}
	mine, _ := LoadIdentities([]string{sshKey}, false)
	r, _ := ParseRecipient(mine[0].Recipient)
	big, _ := Encrypt(make([]byte, MaxSize+1), r)
	if _, err := Decrypt(big, mine); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("an oversized secret: %v", err)
	}
}
