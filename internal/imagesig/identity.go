package imagesig

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/fulcio/certificate"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"

	"microvm.dev/microvm/internal/config"
)

// certPrefix starts the signer ID of a certificate identity.
const certPrefix = "cert:"

// identities checks bundles signed with a certificate (cosign's keyless
// signing) against a trusted root's certificate authorities and a
// policy's identities.
type identities struct {
	// rootPath and rootID (the trusted root file's SHA-256) say which
	// authorities vouched for a recorded signer.
	rootPath string
	rootID   string
	ids      verify.CertificateIdentities
	verifier *verify.Verifier
}

// newIdentities loads the trusted root at path and the policy's
// identities. What the root holds decides what a bundle must carry, as
// cosign verify does: an entry in one of its transparency logs when it
// names any, a certificate timestamp when it names CT logs, and the
// signing time from the log or a timestamp authority; a root with
// certificate authorities only (a private CA, no logs) checks the
// certificate's validity at the current time.
func newIdentities(path string, pids []config.Identity) (*identities, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("imagePolicy.trustedRoot: %w", err)
	}
	tr, err := root.NewTrustedRootFromJSON(data)
	if err != nil {
		return nil, fmt.Errorf("imagePolicy.trustedRoot %s: not a sigstore trusted root: %w", path, err)
	}
	if len(tr.FulcioCertificateAuthorities()) == 0 {
		return nil, fmt.Errorf("imagePolicy.trustedRoot %s: names no certificate authority, so no identity can be checked", path)
	}
	var opts []verify.VerifierOption
	if len(tr.RekorLogs()) > 0 {
		opts = append(opts, verify.WithTransparencyLog(1))
	}
	if len(tr.CTLogs()) > 0 {
		opts = append(opts, verify.WithSignedCertificateTimestamps(1))
	}
	if len(tr.RekorLogs()) > 0 || len(tr.TimestampingAuthorities()) > 0 {
		opts = append(opts, verify.WithObserverTimestamps(1))
	} else {
		opts = append(opts, verify.WithCurrentTime())
	}
	v, err := verify.NewVerifier(tr, opts...)
	if err != nil {
		return nil, fmt.Errorf("imagePolicy.trustedRoot %s: %w", path, err)
	}
	sum := sha256.Sum256(data)
	out := &identities{rootPath: path, rootID: "sha256:" + hex.EncodeToString(sum[:]), verifier: v}
	for i, id := range pids {
		ci, err := verify.NewShortCertificateIdentity(id.Issuer, id.IssuerRegExp, id.Subject, id.SubjectRegExp)
		if err != nil {
			return nil, fmt.Errorf("imagePolicy.identities[%d]: %w", i, err)
		}
		out.ids = append(out.ids, ci)
	}
	return out, nil
}

// verify checks a bundle over the digest raw (algorithm alg): the signer
// it names, or why it failed.
func (s *identities) verify(b *bundle.Bundle, alg string, raw []byte) (*Signer, string) {
	pol := []verify.PolicyOption{}
	for _, id := range s.ids {
		pol = append(pol, verify.WithCertificateIdentity(id))
	}
	res, err := s.verifier.Verify(b, verify.NewPolicy(verify.WithArtifactDigest(alg, raw), pol...))
	if err != nil {
		return nil, describe(err)
	}
	c := res.Signature.Certificate
	return &Signer{Name: c.SubjectAlternativeName + " (" + c.Extensions.Issuer + ")", ID: s.signerID(c.Extensions.Issuer, c.SubjectAlternativeName)}, ""
}

// signerID is what the store records for a certificate signer: the
// trusted root that vouched for it, its issuer and its subject.
func (s *identities) signerID(issuer, subject string) string {
	return certPrefix + url.Values{"root": {s.rootID}, "issuer": {issuer}, "subject": {subject}}.Encode()
}

// allows reports whether a recorded signer ID names a certificate from
// this trusted root whose identity the policy accepts.
func (s *identities) allows(id string) bool {
	rest, ok := strings.CutPrefix(id, certPrefix)
	if !ok {
		return false
	}
	q, err := url.ParseQuery(rest)
	if err != nil || q.Get("root") != s.rootID {
		return false
	}
	sum := certificate.Summary{SubjectAlternativeName: q.Get("subject"), Extensions: certificate.Extensions{Issuer: q.Get("issuer")}}
	_, err = s.ids.Verify(sum)
	return err == nil
}
