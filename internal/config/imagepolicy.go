package config

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"path"
	"regexp"
	"strings"
)

// ImagePolicy says which cosign signatures an image from a registry must
// carry before it is pulled into the store and booted (docs/security.md).
// A VM's policy replaces the defaults' whole; without one nothing is
// checked.
type ImagePolicy struct {
	// Keys are the public keys an image must carry a valid cosign
	// signature by (one of them is enough): each a PEM public key written
	// in the file, or the absolute path of one on the host (cosign.pub).
	Keys []string `yaml:"keys,omitempty" json:"keys,omitempty"`
	// Identities are the certificate identities (cosign's keyless
	// signing: a certificate naming who signed, issued by a certificate
	// authority of TrustedRoot) an image may be signed by instead.
	Identities []Identity `yaml:"identities,omitempty" json:"identities,omitempty"`
	// TrustedRoot is the absolute path on the host of a sigstore trusted
	// root (trusted_root.json: the certificate authorities, and the
	// transparency logs and timestamp authorities whose proofs a bundle
	// must then carry) the identities' certificates are checked against.
	TrustedRoot string `yaml:"trustedRoot,omitempty" json:"trustedRoot,omitempty"`
	// AllowLocal lets the VM boot an image that never came from a
	// registry (imported by hand, or a directory in the store) without a
	// signature; else such an image must have been imported with
	// `microvm image import --trust`.
	AllowLocal bool `yaml:"allowLocal,omitempty" json:"allowLocal,omitempty"`
}

// Identity is a signer's certificate identity, as cosign verify's
// --certificate-identity and --certificate-oidc-issuer (or their
// -regexp forms) name it: the certificate's subject alternative name
// (an email address or URI) and the OIDC issuer that vouched for it.
type Identity struct {
	// Issuer is the issuer exactly; IssuerRegExp a regular expression
	// it must match. One of the two is needed.
	Issuer       string `yaml:"issuer,omitempty" json:"issuer,omitempty"`
	IssuerRegExp string `yaml:"issuerRegExp,omitempty" json:"issuerRegExp,omitempty"`
	// Subject is the subject alternative name exactly; SubjectRegExp a
	// regular expression it must match. One of the two is needed.
	Subject       string `yaml:"subject,omitempty" json:"subject,omitempty"`
	SubjectRegExp string `yaml:"subjectRegExp,omitempty" json:"subjectRegExp,omitempty"`
}

// Enforced reports whether the policy checks anything.
func (p ImagePolicy) Enforced() bool { return len(p.Keys) > 0 || len(p.Identities) > 0 }

// InlineKey reports whether a policy's key is written in the file (PEM)
// rather than a path on the host.
func InlineKey(k string) bool { return strings.HasPrefix(strings.TrimSpace(k), "-----BEGIN") }

// ParsePublicKey parses a PEM public key (PKIX: ECDSA, Ed25519 or RSA, as
// cosign writes them).
func ParsePublicKey(data []byte) (any, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("no PEM block")
	}
	if block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("a PEM %q block, not a PUBLIC KEY", block.Type)
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("not a public key: %w", err)
	}
	return key, nil
}

// imagePolicy checks a policy at path p: at least one key or identity,
// each key a public key in PEM or an absolute path, each identity with
// an issuer and a subject and a trusted root to check them against.
func (v *validator) imagePolicy(p string, pol *ImagePolicy) {
	if pol == nil {
		return
	}
	if len(pol.Keys) == 0 && len(pol.Identities) == 0 {
		v.r.addf(joinPath(p, "keys"), "an image policy needs at least one key (a PEM public key or the absolute path of one) or identity")
	}
	v.identities(p, pol)
	for i, k := range pol.Keys {
		kp := fmt.Sprintf("%s[%d]", joinPath(p, "keys"), i)
		switch {
		case InlineKey(k):
			if _, err := ParsePublicKey([]byte(k)); err != nil {
				v.r.addf(kp, "the key written here cannot be read: %v", err)
			}
		case !path.IsAbs(k):
			v.r.addf(kp, "key %q must be a PEM public key or an absolute path", k)
		}
	}
}

// identities checks a policy's certificate identities and trusted root.
func (v *validator) identities(p string, pol *ImagePolicy) {
	switch {
	case len(pol.Identities) > 0 && pol.TrustedRoot == "":
		v.r.addf(joinPath(p, "trustedRoot"), "identities need a trusted root: the absolute path of a sigstore trusted_root.json naming the certificate authorities (cosign trusted-root create)")
	case pol.TrustedRoot != "" && !path.IsAbs(pol.TrustedRoot):
		v.r.addf(joinPath(p, "trustedRoot"), "%q must be an absolute path", pol.TrustedRoot)
	case pol.TrustedRoot != "" && len(pol.Identities) == 0:
		v.r.addf(joinPath(p, "identities"), "a trusted root is only used to check identities: name at least one (issuer and subject)")
	}
	for i, id := range pol.Identities {
		ip := fmt.Sprintf("%s[%d]", joinPath(p, "identities"), i)
		for _, f := range []struct{ key, exact, re string }{
			{"issuer", id.Issuer, id.IssuerRegExp},
			{"subject", id.Subject, id.SubjectRegExp},
		} {
			switch {
			case f.exact == "" && f.re == "":
				v.r.addf(joinPath(ip, f.key), "an identity needs %s or %sRegExp", f.key, f.key)
			case f.exact != "" && f.re != "":
				v.r.addf(joinPath(ip, f.key), "give %s or %sRegExp, not both", f.key, f.key)
			case f.re != "":
				if _, err := regexp.Compile(f.re); err != nil {
					v.r.addf(joinPath(ip, f.key+"RegExp"), "not a regular expression: %v", err)
				}
			}
		}
	}
}

// IsReference reports whether an image names a registry image (an OCI
// reference: it has a registry, tag or digest) rather than a store name.
func IsReference(image string) bool { return strings.ContainsAny(image, "/:@") }
