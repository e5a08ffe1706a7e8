package config

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"path"
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
	Keys []string `yaml:"keys" json:"keys"`
	// AllowLocal lets the VM boot an image that never came from a
	// registry (imported by hand, or a directory in the store) without a
	// signature; else such an image must have been imported with
	// `microvm image import --trust`.
	AllowLocal bool `yaml:"allowLocal,omitempty" json:"allowLocal,omitempty"`
}

// Enforced reports whether the policy checks anything.
func (p ImagePolicy) Enforced() bool { return len(p.Keys) > 0 }

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

// imagePolicy checks a policy at path p: at least one key, each a public
// key in PEM or an absolute path.
func (v *validator) imagePolicy(p string, pol *ImagePolicy) {
	if pol == nil {
		return
	}
	if len(pol.Keys) == 0 {
		v.r.addf(joinPath(p, "keys"), "an image policy needs at least one key (a PEM public key or the absolute path of one)")
	}
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

// IsReference reports whether an image names a registry image (an OCI
// reference: it has a registry, tag or digest) rather than a store name.
func IsReference(image string) bool { return strings.ContainsAny(image, "/:@") }
