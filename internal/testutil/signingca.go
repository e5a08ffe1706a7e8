package testutil

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"net/url"
	"testing"
	"time"
)

// fulcioIssuer is the OID of Fulcio's OIDC issuer extension (v2).
var fulcioIssuer = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 8}

// SigningCA is a private certificate authority standing in for a Fulcio
// (none can run here): it issues code-signing certificates that name a
// subject (a URI) and an OIDC issuer the way Fulcio's certificates do.
type SigningCA struct {
	Cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewSigningCA makes a CA valid from an hour ago for a day.
func NewSigningCA(t testing.TB) *SigningCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "microvm test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &SigningCA{Cert: cert, key: key}
}

// Issue is the DER of a code-signing certificate for pub, valid for two
// hours, naming subject (a URI) and issuer.
func (ca *SigningCA) Issue(pub crypto.PublicKey, subject, issuer string) ([]byte, error) {
	ext, err := asn1.Marshal(issuer)
	if err != nil {
		return nil, err
	}
	san, err := url.Parse(subject)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		NotBefore:    time.Now().Add(-time.Minute), NotAfter: time.Now().Add(2 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
		URIs:            []*url.URL{san},
		ExtraExtensions: []pkix.Extension{{Id: fulcioIssuer, Value: ext}},
	}
	return x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.key)
}
