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

	"golang.org/x/crypto/ssh"

	"microvm.dev/microvm/internal/state"
)

// Ensure loads the private key at path, generating it (mode 0600) first if
// it does not exist. It returns the key's signer and PEM text.
func Ensure(path, comment string) (ssh.Signer, []byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		_, priv, gerr := ed25519.GenerateKey(rand.Reader)
		if gerr != nil {
			return nil, nil, fmt.Errorf("generate key: %w", gerr)
		}
		block, merr := ssh.MarshalPrivateKey(priv, comment)
		if merr != nil {
			return nil, nil, fmt.Errorf("encode key: %w", merr)
		}
		data = pem.EncodeToMemory(block)
		if werr := state.WriteFile(path, data, 0o600); werr != nil {
			return nil, nil, werr
		}
	} else if err != nil {
		return nil, nil, fmt.Errorf("read key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(data)
	if err != nil {
		return nil, nil, fmt.Errorf("key %s is corrupt: %w", path, err)
	}
	return signer, data, nil
}

// AuthorizedLine is the public key in authorized_keys format.
func AuthorizedLine(s ssh.Signer) string {
	return string(ssh.MarshalAuthorizedKey(s.PublicKey()))
}
