// Package imagesig checks an image's cosign signatures in its registry
// against an image policy before the image is pulled: its public keys, or
// its certificate identities (cosign's keyless signing) checked against a
// sigstore trusted root given as a file. It reads signatures where cosign
// stores them: the sigstore bundles cosign 3 attaches to the image's
// digest as OCI referrers (or under the referrers tag schema's
// sha256-<hex> tag on a registry without the referrers API), verified by
// sigstore-go; and the simple-signing payloads of the older
// sha256-<hex>.sig tag, verified by sigstore's signature package (by key
// only). Nothing is fetched from the public sigstore services: a key's
// signature needs no log, and a certificate's bundle carries whatever
// proof the trusted root asks for.
package imagesig

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/signature"

	"microvm.dev/microvm/internal/config"
)

// Media types and annotations cosign writes.
const (
	// BundleArtifactType is the artifact type of cosign 3's referrer
	// manifests (its layer is the sigstore bundle).
	BundleArtifactType = "application/vnd.dev.sigstore.bundle.v0.3+json"
	// SignatureAnnotation holds a .sig layer's base64 signature.
	SignatureAnnotation = "dev.cosignproject.cosign/signature"
	// simpleSigningType is the critical type of cosign's signed payload.
	simpleSigningType = "cosign container image signature"
)

// maxBlob bounds a bundle or payload read from a registry.
const maxBlob = 1 << 20

// Key is one of a policy's public keys.
type Key struct {
	// Name says where the key came from: its path, or "keys[N]" for one
	// written in the file.
	Name string
	// ID is "sha256:" and the hex SHA-256 of the key's DER form: what a
	// store image records as its signer.
	ID       string
	verifier signature.Verifier
	bundles  *verify.Verifier
}

// Signer is who made a signature that satisfied a policy.
type Signer struct {
	// Name is a key's Name, or a certificate's subject and issuer.
	Name string
	// ID is what a store image records as its signer: a key's ID, or the
	// certificate identity and the trusted root that vouched for it.
	ID string
}

// Verifier checks signatures against a policy's keys and identities.
type Verifier struct {
	keys []Key
	ids  *identities
}

// New loads the policy's keys, each written in the file or read from the
// host, and its trusted root. An unreadable or malformed key or root is
// an error naming it.
func New(p config.ImagePolicy) (*Verifier, error) {
	v := &Verifier{}
	if len(p.Identities) > 0 {
		ids, err := newIdentities(p.TrustedRoot, p.Identities)
		if err != nil {
			return nil, err
		}
		v.ids = ids
	}
	for i, k := range p.Keys {
		name, data := fmt.Sprintf("keys[%d]", i), []byte(k)
		if !config.InlineKey(k) {
			name = k
			var err error
			if data, err = os.ReadFile(k); err != nil {
				return nil, fmt.Errorf("imagePolicy.keys[%d]: %w", i, err)
			}
		}
		key, err := loadKey(name, data)
		if err != nil {
			return nil, fmt.Errorf("imagePolicy.keys[%d] (%s): %w", i, name, err)
		}
		v.keys = append(v.keys, key)
	}
	if len(v.keys) == 0 && v.ids == nil {
		return nil, errors.New("imagePolicy: no keys and no identities")
	}
	return v, nil
}

func loadKey(name string, pemData []byte) (Key, error) {
	pub, err := config.ParsePublicKey(pemData)
	if err != nil {
		return Key{}, err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return Key{}, err
	}
	sv, err := signature.LoadVerifier(pub, crypto.SHA256)
	if err != nil {
		return Key{}, err
	}
	material := root.NewTrustedPublicKeyMaterial(func(string) (root.TimeConstrainedVerifier, error) {
		return root.NewExpiringKey(sv, time.Time{}, time.Time{}), nil
	})
	bv, err := verify.NewVerifier(material, verify.WithNoObserverTimestamps())
	if err != nil {
		return Key{}, err
	}
	sum := sha256.Sum256(der)
	return Key{Name: name, ID: "sha256:" + hex.EncodeToString(sum[:]), verifier: sv, bundles: bv}, nil
}

// Allows reports whether one of an image's recorded signers satisfies
// the policy: one of its keys, or a certificate from its trusted root
// with one of its identities.
func (v *Verifier) Allows(signers []string) bool {
	for _, s := range signers {
		for _, k := range v.keys {
			if k.ID == s {
				return true
			}
		}
		if v.ids != nil && v.ids.allows(s) {
			return true
		}
	}
	return false
}

// Error says why an image's signatures did not satisfy the policy.
type Error struct {
	// Repository and Digests are what was checked.
	Repository string
	Digests    []string
	// Reasons say what each signature found failed on; none: no signature
	// was found at all.
	Reasons []string
}

func (e *Error) Error() string {
	if len(e.Reasons) == 0 {
		return fmt.Sprintf("%s@%s is not signed: no cosign signature found (neither as an OCI referrer nor under the tag %s)",
			e.Repository, e.Digests[0], sigTag(e.Digests[0]))
	}
	return fmt.Sprintf("%s@%s has no valid signature by the image policy's keys or identities: %s",
		e.Repository, e.Digests[0], strings.Join(e.Reasons, "; "))
}

func sigTag(digest string) string { return strings.Replace(digest, ":", "-", 1) + ".sig" }

// Verify looks for a signature by one of the keys or identities over one
// of digests (the reference's own digest first, then the platform
// manifest's when the reference is an index) in repo, and returns who
// made it. opts reach the registry (its credentials, transport and
// context).
func (v *Verifier) Verify(ctx context.Context, repo name.Repository, digests []v1.Hash, opts ...remote.Option) (Signer, error) {
	opts = append([]remote.Option{remote.WithContext(ctx)}, opts...)
	e := &Error{Repository: repo.Name()}
	for _, d := range digests {
		e.Digests = append(e.Digests, d.String())
		signer, reasons, err := v.verifyDigest(repo, d, opts)
		if err != nil {
			return Signer{}, fmt.Errorf("signatures of %s@%s: %w", repo.Name(), d, err)
		}
		if signer != nil {
			return *signer, nil
		}
		e.Reasons = append(e.Reasons, reasons...)
	}
	return Signer{}, e
}

// verifyDigest checks every signature of d: who made one that verified,
// or why each failed. err is a registry that could not be asked. The two
// places cosign stores signatures are looked up at once: each is a few
// round trips to the registry.
func (v *Verifier) verifyDigest(repo name.Repository, d v1.Hash, opts []remote.Option) (*Signer, []string, error) {
	var (
		wg                  sync.WaitGroup
		bundles             []blob
		sigs                []simpleSig
		bundlesErr, sigsErr error
	)
	wg.Go(func() { bundles, bundlesErr = referrerBundles(repo.Digest(d.String()), opts) })
	wg.Go(func() { sigs, sigsErr = simpleSignatures(repo, d, opts) })
	wg.Wait()
	if err := errors.Join(bundlesErr, sigsErr); err != nil {
		return nil, nil, err
	}
	var reasons []string
	for _, b := range bundles {
		signer, why := v.verifyBundle(b.data, d)
		if signer != nil {
			return signer, nil, nil
		}
		reasons = append(reasons, fmt.Sprintf("bundle %s: %s", short(b.digest), why))
	}
	for _, s := range sigs {
		signer, why := v.verifySimple(s, d)
		if signer != nil {
			return signer, nil, nil
		}
		reasons = append(reasons, fmt.Sprintf("%s layer %s: %s", sigTag(d.String()), short(s.digest), why))
	}
	return nil, reasons, nil
}

// verifyBundle checks a bundle by the policy's keys when a key signed
// it, by its identities when a certificate did.
func (v *Verifier) verifyBundle(data []byte, d v1.Hash) (*Signer, string) {
	var b bundle.Bundle
	if err := b.UnmarshalJSON(data); err != nil {
		return nil, fmt.Sprintf("not a sigstore bundle: %v", err)
	}
	raw, err := hex.DecodeString(d.Hex)
	if err != nil {
		return nil, err.Error()
	}
	vc, err := b.VerificationContent()
	if err != nil {
		return nil, fmt.Sprintf("no verification material: %v", err)
	}
	if vc.Certificate() != nil {
		if v.ids == nil {
			return nil, "signed with a certificate (keyless) and the image policy names no identities"
		}
		return v.ids.verify(&b, d.Algorithm, raw)
	}
	if len(v.keys) == 0 {
		return nil, "signed by a key and the image policy names only identities"
	}
	var last error
	for i := range v.keys {
		_, err := v.keys[i].bundles.Verify(&b, verify.NewPolicy(verify.WithArtifactDigest(d.Algorithm, raw), verify.WithKey()))
		if err == nil {
			return &Signer{Name: v.keys[i].Name, ID: v.keys[i].ID}, ""
		}
		last = err
	}
	return nil, describe(last)
}

// describe words a verification failure for an operator.
func describe(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "no matching CertificateIdentity"):
		return "signed by another identity (" + msg + ")"
	case strings.Contains(msg, "leaf certificate"):
		return "the signing certificate is not one the trusted root's authorities vouch for (" + msg + ")"
	case strings.Contains(msg, "could not verify envelope") || strings.Contains(msg, "verification error") || strings.Contains(msg, "invalid signature"):
		return "signed by another key (" + msg + ")"
	case strings.Contains(msg, "digest"):
		return "signed over another digest (" + msg + ")"
	}
	return msg
}

func (v *Verifier) verifySimple(s simpleSig, d v1.Hash) (*Signer, string) {
	sig, err := base64.StdEncoding.DecodeString(s.signature)
	if err != nil {
		return nil, "the signature annotation is not base64"
	}
	var signer *Signer
	for i := range v.keys {
		if v.keys[i].verifier.VerifySignature(bytes.NewReader(sig), bytes.NewReader(s.payload)) == nil {
			signer = &Signer{Name: v.keys[i].Name, ID: v.keys[i].ID}
			break
		}
	}
	if signer == nil && len(v.keys) == 0 {
		return nil, "a .sig signature is checked by key only; identities need cosign 3's bundle (cosign sign --new-bundle-format)"
	}
	if signer == nil {
		return nil, "signed by another key (the signature does not verify with any of the policy's keys)"
	}
	var p struct {
		Critical struct {
			Image struct {
				Digest string `json:"docker-manifest-digest"`
			} `json:"image"`
			Type string `json:"type"`
		} `json:"critical"`
	}
	if err := json.Unmarshal(s.payload, &p); err != nil {
		return nil, fmt.Sprintf("the signed payload is not cosign's: %v", err)
	}
	if p.Critical.Type != simpleSigningType {
		return nil, fmt.Sprintf("not a cosign image signature (type %q)", p.Critical.Type)
	}
	if p.Critical.Image.Digest != d.String() {
		return nil, fmt.Sprintf("signed over another digest (%s)", p.Critical.Image.Digest)
	}
	return signer, ""
}

type blob struct {
	digest string
	data   []byte
}

// referrerBundles are the sigstore bundles attached to d as referrers.
func referrerBundles(d name.Digest, opts []remote.Option) ([]blob, error) {
	idx, err := remote.Referrers(d, opts...)
	if notFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("referrers: %w", err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("referrers: %w", err)
	}
	var out []blob
	for _, desc := range m.Manifests {
		if desc.ArtifactType != BundleArtifactType {
			continue
		}
		img, err := remote.Image(d.Context().Digest(desc.Digest.String()), opts...)
		if err != nil {
			return nil, fmt.Errorf("referrer %s: %w", desc.Digest, err)
		}
		layers, err := img.Layers()
		if err != nil || len(layers) != 1 {
			return nil, fmt.Errorf("referrer %s: not a bundle's manifest (%d layers, %v)", desc.Digest, len(layers), err)
		}
		data, err := readLayer(layers[0])
		if err != nil {
			return nil, fmt.Errorf("referrer %s: %w", desc.Digest, err)
		}
		out = append(out, blob{digest: desc.Digest.String(), data: data})
	}
	return out, nil
}

type simpleSig struct {
	digest    string
	payload   []byte
	signature string
}

// simpleSignatures are the layers of d's .sig tag, if it has one.
func simpleSignatures(repo name.Repository, d v1.Hash, opts []remote.Option) ([]simpleSig, error) {
	img, err := remote.Image(repo.Tag(sigTag(d.String())), opts...)
	if notFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", sigTag(d.String()), err)
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	var out []simpleSig
	for _, desc := range m.Layers {
		l, err := img.LayerByDigest(desc.Digest)
		if err != nil {
			return nil, err
		}
		data, err := readLayer(l)
		if err != nil {
			return nil, fmt.Errorf("%s layer %s: %w", sigTag(d.String()), desc.Digest, err)
		}
		out = append(out, simpleSig{digest: desc.Digest.String(), payload: data, signature: desc.Annotations[SignatureAnnotation]})
	}
	return out, nil
}

// readLayer reads a small blob as stored (cosign's layers are not
// compressed), checking its digest.
func readLayer(l v1.Layer) ([]byte, error) {
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxBlob+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxBlob {
		return nil, fmt.Errorf("larger than %d bytes", maxBlob)
	}
	return data, nil
}

func notFound(err error) bool {
	var te *transport.Error
	return errors.As(err, &te) && te.StatusCode == http.StatusNotFound
}

func short(d string) string {
	if i := strings.IndexByte(d, ':'); i >= 0 && len(d) > i+13 {
		return d[:i+13]
	}
	return d
}
