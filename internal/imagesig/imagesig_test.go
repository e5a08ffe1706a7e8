package imagesig

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"microvm.dev/microvm/internal/config"
)

func pemKey(t *testing.T) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// Keys come from the file or the host; the same key gives the same ID
// either way, and a key that cannot be read is named in the error.
func TestNewLoadsKeys(t *testing.T) {
	inline := pemKey(t)
	path := filepath.Join(t.TempDir(), "cosign.pub")
	if err := os.WriteFile(path, []byte(inline), 0o644); err != nil {
		t.Fatal(err)
	}
	v, err := New(config.ImagePolicy{Keys: []string{inline, path}})
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{v.keys[0].ID, v.keys[1].ID}
	if ids[0] != ids[1] || !strings.HasPrefix(ids[0], "sha256:") || len(ids[0]) != 7+64 {
		t.Errorf("key IDs = %v, want the same sha256 ID twice", ids)
	}
	if !v.Allows([]string{"sha256:other", ids[0]}) || v.Allows([]string{"sha256:other"}) {
		t.Errorf("Allows: want a recorded signer with the key's ID allowed, another refused")
	}
	if v.keys[0].Name != "keys[0]" || v.keys[1].Name != path {
		t.Errorf("key names = %q, %q", v.keys[0].Name, v.keys[1].Name)
	}

	bad := filepath.Join(t.TempDir(), "bad.pub")
	os.WriteFile(bad, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o644)
	for _, c := range []struct {
		keys []string
		want string
	}{
		{[]string{"/nonexistent/cosign.pub"}, "imagePolicy.keys[0]: open /nonexistent/cosign.pub"},
		{[]string{inline, bad}, "imagePolicy.keys[1] (" + bad + "): a PEM \"PRIVATE KEY\" block"},
		{nil, "no keys and no identities"},
	} {
		if _, err := New(config.ImagePolicy{Keys: c.keys}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%q) = %v, want an error with %q", c.keys, err, c.want)
		}
	}
}

// The error says whether no signature was found or why each failed.
func TestErrorWords(t *testing.T) {
	none := &Error{Repository: "r.example/app", Digests: []string{"sha256:abc"}}
	if got := none.Error(); !strings.Contains(got, "r.example/app@sha256:abc is not signed") || !strings.Contains(got, "sha256-abc.sig") {
		t.Errorf("no signature: %q", got)
	}
	bad := &Error{Repository: "r.example/app", Digests: []string{"sha256:abc"}, Reasons: []string{"bundle sha256:0: signed by another key"}}
	if got := bad.Error(); !strings.Contains(got, "no valid signature by the image policy's keys or identities: bundle sha256:0: signed by another key") {
		t.Errorf("bad signature: %q", got)
	}
}
