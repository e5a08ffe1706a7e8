package imagesig

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/sign"
	"google.golang.org/protobuf/encoding/protojson"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/testutil"
)

// testCA issues sign.Bundle's certificates from a testutil.SigningCA,
// naming subject and issuer.
type testCA struct {
	*testutil.SigningCA
	subject, issuer string
}

func newTestCA(t *testing.T) *testCA { return &testCA{SigningCA: testutil.NewSigningCA(t)} }

// trustedRoot writes a sigstore trusted root naming only the CA.
func (ca *testCA) trustedRoot(t *testing.T) string {
	t.Helper()
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01, []root.CertificateAuthority{&root.FulcioCertificateAuthority{
		Root: ca.Cert, ValidityPeriodStart: ca.Cert.NotBefore, URI: "https://ca.test",
	}}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	data, err := tr.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "trusted_root.json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// GetCertificate issues a certificate for the keypair: sign.Bundle's
// certificate provider.
func (ca *testCA) GetCertificate(_ context.Context, kp sign.Keypair, _ *sign.CertificateProviderOptions) ([]byte, error) {
	return ca.Issue(kp.GetPublicKey(), ca.subject, ca.issuer)
}

// signBundle signs an in-toto statement over digest as cosign 3 signs an
// image, with a certificate from ca.
func signBundle(t *testing.T, ca *testCA, digest v1.Hash) []byte {
	t.Helper()
	kp, err := sign.NewEphemeralKeypair(nil)
	if err != nil {
		t.Fatal(err)
	}
	stmt := fmt.Sprintf(`{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"r.test/app","digest":{"%s":"%s"}}],"predicateType":"https://sigstore.dev/cosign/sign/v1","predicate":{}}`, digest.Algorithm, digest.Hex)
	b, err := sign.Bundle(&sign.DSSEData{Data: []byte(stmt), PayloadType: "application/vnd.in-toto+json"}, kp, sign.BundleOptions{CertificateProvider: ca})
	if err != nil {
		t.Fatal(err)
	}
	data, err := protojson.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func hashOf(s string) v1.Hash {
	h, _, _ := v1.SHA256(strings.NewReader(s))
	return h
}

// A bundle signed with a certificate passes a policy naming its subject
// and issuer (exactly or by expression) under the CA's trusted root, and
// is refused, with the cause, by another identity, another root, a
// key-only policy and over another digest. A recorded signer is allowed
// again only under the same root and an identity that matches.
func TestIdentities(t *testing.T) {
	ca := newTestCA(t)
	ca.subject, ca.issuer = "https://ci.example.test/release", "https://issuer.example.test"
	rootPath := ca.trustedRoot(t)
	digest := hashOf("image")
	data := signBundle(t, ca, digest)

	exact := config.Identity{Issuer: ca.issuer, Subject: ca.subject}
	byRegExp := config.Identity{Issuer: ca.issuer, SubjectRegExp: `^https://ci\.example\.test/`}
	var id string
	for _, ident := range []config.Identity{exact, byRegExp} {
		v, err := New(config.ImagePolicy{Identities: []config.Identity{ident}, TrustedRoot: rootPath})
		if err != nil {
			t.Fatal(err)
		}
		s, why := v.verifyBundle(data, digest)
		if s == nil {
			t.Fatalf("identity %+v: refused: %s", ident, why)
		}
		if s.Name != ca.subject+" ("+ca.issuer+")" || !strings.HasPrefix(s.ID, certPrefix) || !v.Allows([]string{s.ID}) {
			t.Errorf("identity %+v: signer %+v, allowed %v", ident, s, v.Allows([]string{s.ID}))
		}
		id = s.ID
	}

	other := newTestCA(t)
	cases := []struct {
		name string
		pol  config.ImagePolicy
		d    v1.Hash
		want string
	}{
		{"another subject", config.ImagePolicy{Identities: []config.Identity{{Issuer: ca.issuer, Subject: "https://ci.example.test/other"}}, TrustedRoot: rootPath}, digest, "signed by another identity"},
		{"another issuer", config.ImagePolicy{Identities: []config.Identity{{Issuer: "https://other.test", Subject: ca.subject}}, TrustedRoot: rootPath}, digest, "signed by another identity"},
		{"another root", config.ImagePolicy{Identities: []config.Identity{exact}, TrustedRoot: other.trustedRoot(t)}, digest, "not one the trusted root's authorities vouch for"},
		{"keys only", config.ImagePolicy{Keys: []string{pemKey(t)}}, digest, "signed with a certificate (keyless)"},
		{"another digest", config.ImagePolicy{Identities: []config.Identity{exact}, TrustedRoot: rootPath}, hashOf("other"), "digest"},
	}
	for _, c := range cases {
		v, err := New(c.pol)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if s, why := v.verifyBundle(data, c.d); s != nil || !strings.Contains(why, c.want) {
			t.Errorf("%s: signer %+v, reason %q; want it refused saying %q", c.name, s, why, c.want)
		}
		if c.name != "another digest" && v.Allows([]string{id}) {
			t.Errorf("%s: the recorded signer %s is allowed", c.name, id)
		}
	}
	// The recorded identity is the certificate's, whatever expression matched.
	if !strings.Contains(id, url.QueryEscape(ca.subject)) || !strings.Contains(id, "root=sha256%3A") {
		t.Errorf("signer ID %q does not record the subject and the root", id)
	}
}

// A trusted root that cannot be read or names no authority is an error
// naming it.
func TestIdentitiesRootErrors(t *testing.T) {
	dir := t.TempDir()
	notJSON := filepath.Join(dir, "root.json")
	os.WriteFile(notJSON, []byte("{"), 0o644)
	empty := filepath.Join(dir, "empty.json")
	os.WriteFile(empty, []byte(`{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}`), 0o644)
	ids := []config.Identity{{Issuer: "i", Subject: "s"}}
	for path, want := range map[string]string{
		filepath.Join(dir, "missing.json"): "imagePolicy.trustedRoot: open " + dir,
		notJSON:                            "not a sigstore trusted root",
		empty:                              "names no certificate authority",
	} {
		if _, err := New(config.ImagePolicy{Identities: ids, TrustedRoot: path}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("root %s: %v, want an error with %q", path, err, want)
		}
	}
}
