package gitsync

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"golang.org/x/crypto/ssh"
)

// Keys are who may sign a deployed commit: OpenPGP public keys (armored)
// and SSH keys in git's allowed_signers format ("principal key-type key").
type Keys struct {
	openPGP string
	ssh     []allowedSigner
}

type allowedSigner struct {
	principal string
	key       ssh.PublicKey
}

// LoadKeys reads key files: an armored OpenPGP key block, or an SSH
// allowed_signers file.
func LoadKeys(paths ...string) (*Keys, error) {
	k := &Keys{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("signing keys: %w", err)
		}
		if bytes.Contains(b, []byte("BEGIN PGP PUBLIC KEY BLOCK")) {
			k.openPGP += string(b) + "\n"
			continue
		}
		for n, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			f := strings.Fields(line)
			// principal [options] key-type base64 [comment]
			var key ssh.PublicKey
			for i := 1; i < len(f) && key == nil; i++ {
				key, _, _, _, err = ssh.ParseAuthorizedKey([]byte(strings.Join(f[i:], " ")))
			}
			if key == nil {
				return nil, fmt.Errorf("signing keys: %s:%d: not an allowed_signers line", p, n+1)
			}
			k.ssh = append(k.ssh, allowedSigner{principal: f[0], key: key})
		}
	}
	if k.openPGP == "" && len(k.ssh) == 0 {
		return nil, errors.New("signing keys: the files hold no key")
	}
	return k, nil
}

// ErrUnsigned says a commit carries no signature.
var ErrUnsigned = errors.New("the commit is not signed")

// Verify checks that commit hash is signed by one of k and returns who.
func (m *Mirror) Verify(hash string, k *Keys) (string, error) {
	c, err := m.commitObject(hash)
	if err != nil {
		return "", err
	}
	sig := c.PGPSignature
	switch {
	case sig == "":
		return "", ErrUnsigned
	case strings.Contains(sig, "BEGIN SSH SIGNATURE"):
		obj := &plumbing.MemoryObject{}
		if err := c.EncodeWithoutSignature(obj); err != nil {
			return "", err
		}
		rd, _ := obj.Reader()
		msg, _ := io.ReadAll(rd)
		return verifySSH(msg, sig, k.ssh)
	default:
		if k.openPGP == "" {
			return "", errors.New("the commit has an OpenPGP signature, and no OpenPGP key is trusted")
		}
		e, err := c.Verify(k.openPGP)
		if err != nil {
			return "", fmt.Errorf("OpenPGP signature: %w", err)
		}
		for name := range e.Identities {
			return name, nil
		}
		return fmt.Sprintf("%X", e.PrimaryKey.Fingerprint), nil
	}
}

// verifySSH checks an SSH signature (the SSHSIG format git writes with
// gpg.format=ssh, namespace "git") over msg against the allowed signers.
func verifySSH(msg []byte, armored string, allowed []allowedSigner) (string, error) {
	body := armored
	body = strings.TrimSpace(body)
	body = strings.TrimPrefix(body, "-----BEGIN SSH SIGNATURE-----")
	body = strings.TrimSuffix(body, "-----END SSH SIGNATURE-----")
	raw, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(body), ""))
	if err != nil || !bytes.HasPrefix(raw, []byte("SSHSIG")) {
		return "", errors.New("SSH signature: malformed")
	}
	var blob struct {
		Version   uint32
		PublicKey []byte
		Namespace string
		Reserved  string
		HashAlg   string
		Signature []byte
	}
	if err := ssh.Unmarshal(raw[6:], &blob); err != nil || blob.Version != 1 {
		return "", fmt.Errorf("SSH signature: malformed: %v", err)
	}
	if blob.Namespace != "git" {
		return "", fmt.Errorf("SSH signature: namespace %q, not git", blob.Namespace)
	}
	pub, err := ssh.ParsePublicKey(blob.PublicKey)
	if err != nil {
		return "", fmt.Errorf("SSH signature: %w", err)
	}
	principal := ""
	for _, a := range allowed {
		if bytes.Equal(a.key.Marshal(), pub.Marshal()) {
			principal = a.principal
			break
		}
	}
	if principal == "" {
		return "", fmt.Errorf("SSH signature by %s, which is not an allowed signer", ssh.FingerprintSHA256(pub))
	}
	var h hash.Hash
	switch blob.HashAlg {
	case "sha512":
		h = sha512.New()
	case "sha256":
		h = sha256.New()
	default:
		return "", fmt.Errorf("SSH signature: hash %q", blob.HashAlg)
	}
	h.Write(msg)
	signed := SSHSignedData(blob.Namespace, blob.HashAlg, h.Sum(nil))
	var sig ssh.Signature
	if err := ssh.Unmarshal(blob.Signature, &sig); err != nil {
		return "", fmt.Errorf("SSH signature: %w", err)
	}
	if err := pub.Verify(signed, &sig); err != nil {
		return "", fmt.Errorf("SSH signature does not match the commit: %w", err)
	}
	return principal, nil
}

// SSHSignedData is what an SSHSIG signature signs: the magic preamble, the
// namespace, the reserved field, the hash algorithm and the message hash.
func SSHSignedData(namespace, hashAlg string, digest []byte) []byte {
	return append([]byte("SSHSIG"), ssh.Marshal(struct {
		Namespace string
		Reserved  string
		HashAlg   string
		Hash      []byte
	}{namespace, "", hashAlg, digest})...)
}
