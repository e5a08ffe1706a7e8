// Package sshkey creates and loads the ed25519 keys microvm keeps: each VM's
// SSH host key (so a VM's identity survives reboots) and microvm's own client
// key, authorized in every VM for `microvm exec` and `microvm ssh`.
package sshkey

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/crypto/ssh"
)

// Ensure loads the private key at path, generating it (mode 0600) first if
// it does not exist. It returns the key's signer and PEM text. Callers
// racing to create the same key (VMs booting in parallel) all get the one
// that was written first: a new key is linked into place, never renamed
// over an existing one.
func Ensure(path, comment string) (ssh.Signer, []byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		data, err = create(path, comment)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(data)
	if err != nil {
		return nil, nil, fmt.Errorf("key %s is corrupt: %w", path, err)
	}
	return signer, data, nil
}

// create writes a new key to path unless one appears there first, and
// returns the key that is there.
func create(path, comment string) ([]byte, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	data := pem.EncodeToMemory(block)
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".new-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("write key %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return os.ReadFile(path) // another caller's key won
		}
		return nil, fmt.Errorf("write key %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return data, nil
}

// AuthorizedLine is the public key in authorized_keys format.
func AuthorizedLine(s ssh.Signer) string {
	return string(ssh.MarshalAuthorizedKey(s.PublicKey()))
}
