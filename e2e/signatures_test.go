package e2e

import (
	"encoding/json"
	"fmt"
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
// digest and a signature moved onto another digest, naming the cause and
// storing nothing. Then a daemon whose file asks for the key boots the
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
	} {
		out, err := mv("image", "pull", "--key", pub, tc.ref)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("pull --key of %s: %v, want an error saying %q:\n%s", tc.ref, err, tc.want, out)
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
	for _, ref := range []string{unsigned, other, moved, stolen} {
		if _, ok := got[ref]; ok {
			t.Errorf("%s was refused but is in the store", ref)
		}
	}
	if len(got[bundled].Signers) != 1 || !strings.HasPrefix(got[bundled].Signers[0], "sha256:") {
		t.Errorf("%s's signers = %v, want the key's id", bundled, got[bundled].Signers)
	}
	// No layer of a refused image was fetched: the cache holds the
	// accepted images' layers only.
	want := map[string]bool{}
	for _, ref := range []string{bundled, legacy} {
		for _, l := range got[ref].Layers {
			want[l] = true
		}
	}
	blobs, _ := os.ReadDir(filepath.Join(state, "images", "blobs", "sha256"))
	if len(blobs) != len(want) {
		t.Errorf("the layer cache holds %d blobs, want the %d of the two accepted images", len(blobs), len(want))
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
