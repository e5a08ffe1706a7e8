package guestroot

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"
)

// AuthorizedKeysPath is where, in the root, the guest's SSH server reads
// the keys that may log in as root (one authorized_keys line each) at
// every login: written from the VM's spec at boot, and changed while the
// guest runs only when it moves to another host (the host it moves to is
// authorized, then the one it left is not).
const AuthorizedKeysPath = "/run/microvm/authorized_keys"

// WriteAuthorized replaces the authorized keys in r with keys, each
// checked to be an SSH public key.
func (r Root) WriteAuthorized(keys []string) error {
	var b strings.Builder
	for _, k := range keys {
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k)); err != nil {
			return fmt.Errorf("not an SSH public key: %q: %w", k, err)
		}
		b.WriteString(strings.TrimSpace(k) + "\n")
	}
	return writeAtomic(r.Path(AuthorizedKeysPath), []byte(b.String()), 0o600)
}

// AddAuthorized adds keys to the authorized keys in r.
func (r Root) AddAuthorized(keys []string) error {
	have, err := r.Authorized()
	if err != nil {
		return err
	}
	return r.WriteAuthorized(append(have, keys...))
}

// Authorized reads the authorized keys in r (none when there is no file).
func (r Root) Authorized() ([]string, error) {
	b, err := os.ReadFile(r.Path(AuthorizedKeysPath))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, line := range strings.Split(string(b), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			keys = append(keys, line)
		}
	}
	return keys, nil
}

// IsAuthorized says whether key may log in (its wire form compared).
func (r Root) IsAuthorized(key ssh.PublicKey) bool {
	keys, err := r.Authorized()
	if err != nil {
		return false
	}
	want := string(key.Marshal())
	for _, k := range keys {
		if pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k)); err == nil && string(pk.Marshal()) == want {
			return true
		}
	}
	return false
}
