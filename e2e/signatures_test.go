package e2e

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/testutil"
)

// cosignLab signs images in a test's registry with sigstore's own cosign
// (built from its Go module by tools/cosign), with keys of its own and no
// transparency log. Any HTTPS cosign would open beyond the registry goes
// to a closed port on loopback (HTTPS_PROXY): nothing leaves the machine.
type cosignLab struct {
	t    *testing.T
	bin  string
	home string
	reg  *debRegistry
}

func newCosignLab(t *testing.T, reg *debRegistry) *cosignLab {
	t.Helper()
	return &cosignLab{t: t, bin: testutil.CosignBinary(t), home: t.TempDir(), reg: reg}
}

func (c *cosignLab) run(args ...string) string {
	c.t.Helper()
	cmd := exec.Command(c.bin, args...)
	cmd.Dir = c.home
	cmd.Env = []string{"HOME=" + c.home, "PATH=/usr/bin:/bin", "COSIGN_PASSWORD=", "COSIGN_YES=true",
		"HTTPS_PROXY=http://127.0.0.1:9", "HTTP_PROXY=http://127.0.0.1:9", "NO_PROXY=" + c.reg.addr}
	out, err := cmd.CombinedOutput()
	if err != nil {
		c.t.Fatalf("cosign %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// keyPair makes a cosign key pair and returns the public key's path.
func (c *cosignLab) keyPair(name string) (pub, priv string) {
	c.run("generate-key-pair", "--output-key-prefix", filepath.Join(c.home, name))
	return filepath.Join(c.home, name+".pub"), filepath.Join(c.home, name+".key")
}

// sign signs ref's digest with key: as a sigstore bundle attached as an
// OCI referrer (cosign 3's default), or with legacy in the older .sig tag.
func (c *cosignLab) sign(ref, key string, legacy bool) {
	args := []string{"sign", "--key", key, "--tlog-upload=false", "--use-signing-config=false", "--allow-http-registry"}
	if legacy {
		args = append(args, "--new-bundle-format=false")
	}
	c.run(append(args, digestRef(c.t, ref))...)
}

// certificate issues a code-signing certificate for the public key at
// pub from a certificate authority the test makes (testutil.SigningCA,
// standing in for a Fulcio, which cannot run here), naming subject and
// the OIDC issuer as Fulcio's certificates do. It returns the leaf's and the CA's PEM files.
func (c *cosignLab) certificate(pub, subject, issuer string) (leaf, chain string) {
	c.t.Helper()
	ca := testutil.NewSigningCA(c.t)
	pubPEM, err := os.ReadFile(pub)
	if err != nil {
		c.t.Fatal(err)
	}
	block, _ := pem.Decode(pubPEM)
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		c.t.Fatal(err)
	}
	leafDER, err := ca.Issue(key, subject, issuer)
	if err != nil {
		c.t.Fatal(err)
	}
	leaf, chain = filepath.Join(c.home, "leaf.pem"), filepath.Join(c.home, "ca.pem")
	os.WriteFile(leaf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}), 0o644)
	os.WriteFile(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}), 0o644)
	return leaf, chain
}

// trustedRoot makes, with cosign's own trusted-root create, a sigstore
// trusted root whose only authority is the CA in chain.
func (c *cosignLab) trustedRoot(chain string) string {
	out := filepath.Join(c.home, "trusted_root.json")
	c.run("trusted-root", "create", "--fulcio", "url=https://ca.example.test,certificate-chain="+chain, "--out", out)
	return out
}

// signWithCert signs ref's digest with key as a bundle carrying the
// certificate leaf: cosign's signing with a private PKI, verified as a
// keyless signature is (the CA is the trusted root's; a bundle v0.3
// carries the leaf alone).
func (c *cosignLab) signWithCert(ref, key, leaf string) {
	c.run("sign", "--key", key, "--certificate", leaf,
		"--tlog-upload=false", "--use-signing-config=false", "--allow-http-registry", digestRef(c.t, ref))
}

// tamperLastLayer changes a byte of ref's last layer where the registry
// stores it: the registry serves the changed bytes under the old digest,
// as a compromised registry or a man in the middle would.
func tamperLastLayer(t *testing.T, reg *debRegistry, ref string) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	d := m.Layers[len(m.Layers)-1].Digest
	path := filepath.Join(reg.dir, "docker/registry/v2/blobs", d.Algorithm, d.Hex[:2], d.Hex, "data")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// digestRef is ref pinned to the digest its tag has now.
func digestRef(t *testing.T, ref string) string {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	d, err := remote.Head(r)
	if err != nil {
		t.Fatal(err)
	}
	return r.Context().Name() + "@" + d.Digest.String()
}

// TestSignedImages: images signed in the test by cosign, verified by
// microvm before a single layer is pulled. `image pull --key` takes an
// image signed as a bundle (referrer) or in the .sig tag, and refuses one
// unsigned, one signed by another key, a tag re-pointed to an unsigned
// digest, a signature moved onto another digest and a signed image whose
// layer was changed in the registry, naming the cause and storing
// nothing. A certificate identity from a trusted root (keyless signing,
// checked by cosign verify too) is taken and another identity refused; a
// key rotation (signed by the old key, then the new) passes a policy
// with both keys and then the new key alone. Then a daemon whose file asks for the key boots the
// signed image and refuses, with nothing started, an unsigned one and a
// local image not imported with --trust, which the file lets through and
// the host's --image-key does not.
func TestSignedImages(t *testing.T) {
	requireGuestEnv(t)
	reg := startRegistry(t)
	c := newCosignLab(t, reg)
	pub, priv := c.keyPair("release")
	_, otherPriv := c.keyPair("other")
	cfg := v1.Config{Entrypoint: []string{"/bin/sh", "-c", "exec sleep 86400"}}
	push := func(tag, marker string) string {
		return reg.push(t, tag, cfg, baseLayer(t), filesLayer(t, map[string]string{"etc/image": marker + "\n"}))
	}
	bundled := push("app/bundled:1", "bundled")
	c.sign(bundled, priv, false)
	legacy := push("app/legacy:1", "legacy")
	c.sign(legacy, priv, true)
	other := push("app/other:1", "other")
	c.sign(other, otherPriv, false)
	unsigned := push("app/unsigned:1", "unsigned")
	moved := push("app/moved:1", "moved-signed")
	c.sign(moved, priv, false)
	push("app/moved:1", "moved-unsigned") // the tag now names an unsigned digest
	// A .sig signature of the legacy image copied onto another image's
	// digest: valid by the key, but over the legacy image's digest.
	stolen := push("app/stolen:1", "stolen")
	copySigTag(t, legacy, stolen)
	tampered := push("app/tampered:1", "tampered")
	c.sign(tampered, priv, false)
	tamperLastLayer(t, reg, tampered)
	// Keyless: a certificate naming the release pipeline, from the test's
	// CA, which the trusted root made by cosign names.
	const subject, issuer = "https://ci.example.test/release", "https://issuer.example.test"
	keyless := push("app/keyless:1", "keyless")
	leaf, chain := c.certificate(pub, subject, issuer)
	c.signWithCert(keyless, priv, leaf)
	trustedRoot := c.trustedRoot(chain)
	// Rotation: signed by the old key now, by the new one later.
	newPub, newPriv := c.keyPair("new")
	rotated := push("app/rotated:1", "rotated")
	c.sign(rotated, priv, false)

	state := t.TempDir()
	mv := func(args ...string) (string, error) {
		out, err := exec.Command(filepath.Join(shared.initDir, "microvm"), append([]string{"--state-dir", state}, args...)...).CombinedOutput()
		return string(out), err
	}
	for _, ref := range []string{bundled, legacy} {
		if out, err := mv("image", "pull", "--key", pub, ref); err != nil {
			t.Errorf("pull --key of %s, signed by the key: %v\n%s", ref, err, out)
		}
	}
	for _, tc := range []struct{ ref, want string }{
		{unsigned, "is not signed: no cosign signature found"},
		{other, "signed by another key"},
		{moved, "is not signed"},
		{stolen, "signed over another digest"},
		{tampered, "error verifying sha256 checksum"},
		{keyless, "signed with a certificate (keyless) and the image policy names no identities"},
	} {
		out, err := mv("image", "pull", "--key", pub, tc.ref)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("pull --key of %s: %v, want an error saying %q:\n%s", tc.ref, err, tc.want, out)
		}
	}
	identity := func(subject string) []string {
		return []string{"image", "pull", "--trusted-root", trustedRoot, "--certificate-oidc-issuer", issuer, "--certificate-identity", subject, keyless}
	}
	if out, err := mv(identity(subject)...); err != nil {
		t.Errorf("pull of %s by its certificate identity: %v\n%s", keyless, err, out)
	}
	if out, err := mv(identity("https://ci.example.test/other")...); err == nil || !strings.Contains(out, "signed by another identity") {
		t.Errorf("pull of %s by another identity: %v, want it refused saying so:\n%s", keyless, err, out)
	}
	// cosign itself, the peer a user would check with, takes the same
	// signature under the same root and identity.
	c.run("verify", "--trusted-root", trustedRoot, "--certificate-identity", subject, "--certificate-oidc-issuer", issuer,
		"--insecure-ignore-tlog", "--insecure-ignore-sct", "--allow-http-registry", digestRef(t, keyless))
	// Rotation: the new key alone refuses the image until it signs it too;
	// then both keys, and the new one alone, take it.
	if out, err := mv("image", "pull", "--key", newPub, rotated); err == nil || !strings.Contains(out, "signed by another key") {
		t.Errorf("pull of %s, signed by the old key only, with the new key: %v, want it refused:\n%s", rotated, err, out)
	}
	c.sign(rotated, newPriv, false)
	for _, keys := range [][]string{{"--key", pub, "--key", newPub}, {"--key", newPub}} {
		if out, err := mv(append(append([]string{"image", "pull"}, keys...), rotated)...); err != nil {
			t.Errorf("pull of %s, signed by both keys, with %v: %v\n%s", rotated, keys, err, out)
		}
	}
	if out, err := mv("image", "pull", "--key", filepath.Join(c.home, "missing.pub"), bundled); err == nil || !strings.Contains(out, "missing.pub") {
		t.Errorf("pull with an unreadable key: %v, want an error naming it:\n%s", err, out)
	}
	out, err := mv("image", "list", "-o", "json")
	if err != nil {
		t.Fatalf("image list: %v\n%s", err, out)
	}
	var imgs []apitypes.Image
	if err := json.Unmarshal([]byte(out), &imgs); err != nil {
		t.Fatalf("image list -o json: %v\n%s", err, out)
	}
	got := map[string]apitypes.Image{}
	for _, img := range imgs {
		got[img.Name] = img
	}
	for _, ref := range []string{unsigned, other, moved, stolen, tampered} {
		if _, ok := got[ref]; ok {
			t.Errorf("%s was refused but is in the store", ref)
		}
	}
	if len(got[bundled].Signers) != 1 || !strings.HasPrefix(got[bundled].Signers[0], "sha256:") {
		t.Errorf("%s's signers = %v, want the key's id", bundled, got[bundled].Signers)
	}
	if s := got[keyless].Signers; len(s) != 1 || !strings.Contains(s[0], url.QueryEscape(subject)) {
		t.Errorf("%s's signers = %v, want the certificate's identity", keyless, s)
	}
	if s := got[rotated].Signers; len(s) != 1 || s[0] == got[bundled].Signers[0] {
		t.Errorf("%s's signers = %v, want the new key's id (the last pull's policy)", rotated, s)
	}
	// No layer of a refused image was fetched: the cache holds the
	// accepted images' layers only.
	want := map[string]bool{}
	for _, ref := range []string{bundled, legacy, keyless, rotated} {
		for _, l := range got[ref].Layers {
			want[l] = true
		}
	}
	blobs, _ := os.ReadDir(filepath.Join(state, "images", "blobs", "sha256"))
	if len(blobs) != len(want) {
		t.Errorf("the layer cache holds %d blobs, want the %d of the accepted images", len(blobs), len(want))
	}

	// The daemon: the signed VM's policy has the key written in the file;
	// the others have none, and the host's --image-key refuses them.
	key, err := os.ReadFile(pub)
	if err != nil {
		t.Fatal(err)
	}
	l := newDaemonLab(t, "sig")
	file := l.writeFile(fmt.Sprintf(`defaults: { memory: 256M, stopTimeout: 20s }
vms:
  signed:
    index: 1
    image: %q
    imagePolicy:
      keys:
        - |
%s
  unsigned: { index: 2, image: %q }
  local: { index: 3, image: base }
`, bundled, testutil.Indent(string(key), "          "), unsigned))
	if out, err := l.cli("daemon", "--config", file, "--image-key", filepath.Join(c.home, "missing.pub")); err == nil || !strings.Contains(out, "--image-key") {
		t.Errorf("a daemon with an unreadable --image-key: %v, want it refused naming the flag:\n%s", err, out)
	}
	l.startDaemon(file, "--image-key", pub)
	vms := l.waitFor("signed running, unsigned and local failed", 5*time.Minute, func(v map[string]apitypes.VMStatus) bool {
		return allRunning("signed")(v) && v["unsigned"].Failure != "" && v["local"].Failure != ""
	})
	if f := vms["unsigned"].Failure; !strings.Contains(f, "is not signed") {
		t.Errorf("unsigned's failure = %q, want it to say the image is not signed", f)
	}
	if f := vms["local"].Failure; !strings.Contains(f, "--trust") || !strings.Contains(f, "the host's --image-key") {
		t.Errorf("local's failure = %q, want it to name the host's key and image import --trust", f)
	}
	for _, n := range []string{"unsigned", "local"} {
		if vms[n].PID != 0 || vms[n].State == apitypes.Running {
			t.Errorf("%s: %s with pid %d, want nothing started", n, vms[n].State, vms[n].PID)
		}
	}
	if out, err := l.cli("exec", "signed", "--", "cat", "/etc/image"); err != nil || strings.TrimSpace(out) != "bundled" {
		t.Errorf("signed VM's /etc/image = %q (%v), want the signed image's", out, err)
	}
}

// copySigTag copies from's .sig signature tag onto to's digest.
func copySigTag(t *testing.T, from, to string) {
	t.Helper()
	tagOf := func(ref string) name.Tag {
		d, err := name.NewDigest(digestRef(t, ref))
		if err != nil {
			t.Fatal(err)
		}
		return d.Context().Tag(strings.Replace(d.DigestStr(), ":", "-", 1) + ".sig")
	}
	img, err := remote.Image(tagOf(from))
	if err != nil {
		t.Fatalf("%s's .sig tag: %v", from, err)
	}
	if err := remote.Write(tagOf(to), img); err != nil {
		t.Fatal(err)
	}
}
