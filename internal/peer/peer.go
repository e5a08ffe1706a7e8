// Package peer is how microvm daemons on different hosts trust each
// other, as SSH hosts do: each daemon has a key pair of its own, made once
// and kept in its state directory, and the file's peers name each host by
// the SHA-256 of its public key (`microvm peer key` prints it). Every
// connection between two daemons is TLS with both ends' certificates
// checked against those names: no certificate authority, no token, and a
// host the file does not name is refused at the handshake.
package peer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// Identity is this daemon's key pair and self-signed certificate.
type Identity struct {
	Cert tls.Certificate
	// Key is the public key's name: "sha256:" and the hex SHA-256 of its
	// DER form (SubjectPublicKeyInfo).
	Key string
}

// KeyOf names a certificate's public key as the file's peers do.
func KeyOf(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Load reads the identity kept in dir (key.pem and cert.pem), making it
// first if there is none.
func Load(dir string) (*Identity, error) {
	keyPath, certPath := filepath.Join(dir, "key.pem"), filepath.Join(dir, "cert.pem")
	if _, err := os.Stat(keyPath); errors.Is(err, os.ErrNotExist) {
		if err := create(dir, keyPath, certPath); err != nil {
			return nil, fmt.Errorf("make the peer identity in %s: %w", dir, err)
		}
	}
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("the peer identity in %s: %w", dir, err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("the peer identity in %s: %w", dir, err)
	}
	cert.Leaf = leaf
	return &Identity{Cert: cert, Key: KeyOf(leaf)}, nil
}

func create(dir, keyPath, certPath string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "microvm peer " + host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(100, 0, 0),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyPath+".tmp", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	return os.Rename(keyPath+".tmp", keyPath)
}

// Dir is where a daemon keeps its peer identity in its state directory.
func Dir(stateDir string) string { return filepath.Join(stateDir, "peer") }

// ErrUntrusted says the other end's key is not the one expected.
var ErrUntrusted = errors.New("the peer's key is not one the file's peers name")

// ServerTLS serves peers whose key trust names (the host it is), and
// refuses every other at the handshake.
func (id *Identity) ServerTLS(trust func(key string) (string, bool)) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.Cert},
		ClientAuth:   tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return check(raw, func(key string) bool { _, ok := trust(key); return ok })
		},
	}
}

// PeerOf is the host the request's client certificate names, by trust.
func PeerOf(r *http.Request, trust func(key string) (string, bool)) (string, bool) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return "", false
	}
	return trust(KeyOf(r.TLS.PeerCertificates[0]))
}

// Client is an HTTP client to the peer whose key is want, presenting this
// identity.
func (id *Identity) Client(want string, timeout time.Duration) *http.Client {
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.Cert},
		// The server's certificate is self-signed: it is checked against
		// the key the file names, not a CA.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return check(raw, func(key string) bool { return key == want })
		},
	}
	return &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: false}}
}

func check(raw [][]byte, ok func(string) bool) error {
	if len(raw) == 0 {
		return ErrUntrusted
	}
	cert, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return err
	}
	if key := KeyOf(cert); !ok(key) {
		return fmt.Errorf("%w (it has %s)", ErrUntrusted, key)
	}
	return nil
}
