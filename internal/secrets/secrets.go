// Package secrets encrypts and decrypts the age-encrypted secrets a config
// file carries for its VMs: ASCII-armored age files, decrypted on the host
// with its age identity or its SSH host key (as agenix does), so that
// what is kept in git is only ciphertext.
package secrets

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"filippo.io/age"
	"filippo.io/age/agessh"
	"filippo.io/age/armor"
	"golang.org/x/crypto/ssh"
)

// DefaultIdentities are where the host's keys are looked for when no
// identity file is named: microvm's own age key, then the SSH host key.
func DefaultIdentities() []string {
	return []string{"/etc/microvm/age.key", "/etc/ssh/ssh_host_ed25519_key"}
}

// MaxSize bounds one secret's plaintext: secrets travel in the guest's
// initramfs and live in its memory.
const MaxSize = 1 << 20

// Identity is a key the host decrypts with, and where it came from.
type Identity struct {
	age.Identity
	// Path is the file it was read from.
	Path string
	// Recipient is its public side, in the form age -r takes.
	Recipient string
}

// LoadIdentities reads the identities in paths: age identity files
// (AGE-SECRET-KEY-1…, one or more) or OpenSSH private keys (ed25519, rsa).
// A path in optional that does not exist is skipped; any other that
// cannot be read or parsed is an error naming it.
func LoadIdentities(paths []string, optional bool) ([]Identity, error) {
	var out []Identity
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) && optional {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("age identity: %w", err)
		}
		ids, err := parseIdentities(b)
		if err != nil {
			return nil, fmt.Errorf("age identity %s: %w", p, err)
		}
		for _, id := range ids {
			id.Path = p
			out = append(out, id)
		}
	}
	return out, nil
}

// HostIdentities are the identities in paths (each must be readable) or,
// when paths is empty, those of DefaultIdentities that exist.
func HostIdentities(paths []string) ([]Identity, error) {
	if len(paths) > 0 {
		return LoadIdentities(paths, false)
	}
	return LoadIdentities(DefaultIdentities(), true)
}

func parseIdentities(b []byte) ([]Identity, error) {
	if bytes.Contains(b, []byte("PRIVATE KEY-----")) {
		id, err := agessh.ParseIdentity(b)
		if err != nil {
			return nil, err
		}
		key, err := ssh.ParseRawPrivateKey(b)
		if err != nil {
			return nil, err
		}
		signer, err := ssh.NewSignerFromKey(key)
		if err != nil {
			return nil, err
		}
		return []Identity{{Identity: id, Recipient: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))}}, nil
	}
	ids, err := age.ParseIdentities(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	var out []Identity
	for _, id := range ids {
		x, ok := id.(*age.X25519Identity)
		if !ok {
			return nil, fmt.Errorf("unsupported identity type %T", id)
		}
		out = append(out, Identity{Identity: id, Recipient: x.Recipient().String()})
	}
	return out, nil
}

// ParseRecipient reads a recipient as age -r takes it: age1… or an SSH
// public key (ssh-ed25519, ssh-rsa).
func ParseRecipient(s string) (age.Recipient, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "ssh-") {
		return agessh.ParseRecipient(s)
	}
	return age.ParseX25519Recipient(s)
}

// Encrypt returns plaintext encrypted to recipients, ASCII-armored.
func Encrypt(plaintext []byte, recipients ...age.Recipient) (string, error) {
	if len(recipients) == 0 {
		return "", errors.New("encrypt: no recipients")
	}
	var buf bytes.Buffer
	aw := armor.NewWriter(&buf)
	w, err := age.Encrypt(aw, recipients...)
	if err != nil {
		return "", err
	}
	if _, err := w.Write(plaintext); err != nil {
		return "", err
	}
	if err := w.Close(); err != nil {
		return "", err
	}
	if err := aw.Close(); err != nil {
		return "", err
	}
	return buf.String(), nil
}

// Check says whether armored is an ASCII-armored age file (its header
// parses), without decrypting it.
func Check(armored string) error {
	if !strings.HasPrefix(strings.TrimSpace(armored), armor.Header) {
		return fmt.Errorf("not an ASCII-armored age file (it must start with %s: encrypt with microvm secret encrypt, or age -a)", armor.Header)
	}
	if _, err := age.ExtractHeader(armor.NewReader(strings.NewReader(strings.TrimSpace(armored) + "\n"))); err != nil {
		return fmt.Errorf("not a readable age file: %w", err)
	}
	return nil
}

// Decrypt returns the plaintext of armored, decrypted with one of ids.
func Decrypt(armored string, ids []Identity) ([]byte, error) {
	if len(ids) == 0 {
		return nil, errors.New("this host has no age identity to decrypt it with (give one with --age-identity; looked for " + strings.Join(DefaultIdentities(), " and ") + ")")
	}
	plain := make([]age.Identity, len(ids))
	for i, id := range ids {
		plain[i] = id.Identity
	}
	r, err := age.Decrypt(armor.NewReader(strings.NewReader(strings.TrimSpace(armored)+"\n")), plain...)
	if err != nil {
		var noMatch *age.NoIdentityMatchError
		if errors.As(err, &noMatch) {
			return nil, fmt.Errorf("it is not encrypted to this host's keys (%s)", recipients(ids))
		}
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("larger than %d bytes", MaxSize)
	}
	return b, nil
}

func recipients(ids []Identity) string {
	var s []string
	for _, id := range ids {
		s = append(s, id.Recipient)
	}
	return strings.Join(s, ", ")
}
