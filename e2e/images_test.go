package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/crypto/bcrypt"

	"microvm.dev/microvm/internal/store"
	"microvm.dev/microvm/internal/testutil"
)

// debianRoot is a Debian root filesystem tarball made from Debian's own
// packages by mmdebstrap (scripts/build-debian-image.sh), built once and
// cached across tests and runs.
func debianRoot(t *testing.T, packages string) string {
	t.Helper()
	testutil.RequireCommand(t, "mmdebstrap")
	out, err := exec.Command("bash", "../scripts/build-debian-image.sh", packages).Output()
	if err != nil {
		msg := err.Error()
		if ee, ok := err.(*exec.ExitError); ok {
			msg += "\n" + string(ee.Stderr)
		}
		t.Fatalf("build the Debian image with %s: %s", packages, msg)
	}
	return strings.TrimSpace(string(out))
}

// debRegistry is Debian's docker-registry (the CNCF distribution registry),
// run by the test on a free loopback port with its storage in a temporary
// directory.
type debRegistry struct {
	addr string
	// dir is the registry's storage (its filesystem driver's root).
	dir string
	// auth is the login pushes use (a registry started with one).
	auth authn.Authenticator
}

func startRegistry(t *testing.T) *debRegistry { return startRegistryConfig(t, "") }

// startRegistryWithLogin starts a registry that serves only user with
// password (htpasswd, bcrypt, as docker-registry's own auth takes it).
func startRegistryWithLogin(t *testing.T, user, password string) *debRegistry {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(file, []byte(user+":"+string(hash)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := startRegistryConfig(t, fmt.Sprintf("auth: { htpasswd: { realm: microvm-test, path: %s } }\n", file))
	r.auth = &authn.Basic{Username: user, Password: password}
	return r
}

// startRegistryConfig starts Debian's docker-registry on loopback with
// extra lines of configuration.
func startRegistryConfig(t *testing.T, extra string) *debRegistry {
	t.Helper()
	testutil.RequireCommand(t, "docker-registry")
	addr := testutil.FreeAddr(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("version: 0.1\nlog: { level: error }\nstorage: { filesystem: { rootdirectory: %s } }\nhttp: { addr: %s }\n%s",
		filepath.Join(dir, "data"), addr, extra)), 0o644)
	cmd := exec.Command("docker-registry", "serve", cfg)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return &debRegistry{addr: addr, dir: filepath.Join(dir, "data")}
		}
		if time.Now().After(deadline) {
			t.Fatalf("docker-registry did not listen on %s:\n%s", addr, logs.String())
		}
	}
}

// push makes an image of layers (each a tar file or in-memory tar) with
// cfg and pushes it to the registry as repo:tag; it returns the reference.
func (r *debRegistry) push(t *testing.T, repoTag string, cfg v1.Config, layers ...v1.Layer) string {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	if img, err = mutate.Config(img, cfg); err != nil {
		t.Fatal(err)
	}
	ref := r.addr + "/" + repoTag
	parsed, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	opts := []remote.Option{}
	if r.auth != nil {
		opts = append(opts, remote.WithAuth(r.auth))
	}
	if err := remote.Write(parsed, img, opts...); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return ref
}

// baseLayer is the base image's tree (busybox) as one layer.
func baseLayer(t *testing.T) v1.Layer {
	t.Helper()
	dir := filepath.Join(shared.dir, "store", "base")
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(store.TarTree(pw, dir)) }()
		return pr, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// fileLayer is a layer of the tar file at path, compressed fast.
func fileLayer(t *testing.T, path string) v1.Layer {
	t.Helper()
	l, err := tarball.LayerFromFile(path, tarball.WithCompressionLevel(gzip.BestSpeed))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// filesLayer is a layer holding files (path → content, mode 0644) and
// their directories (0755), in a stable order.
func filesLayer(t *testing.T, files map[string]string) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	for _, p := range slices.Sorted(maps.Keys(files)) {
		for d := path.Dir(p); d != "." && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	for _, d := range slices.Sorted(maps.Keys(dirs)) {
		tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755})
	}
	for _, p := range slices.Sorted(maps.Keys(files)) {
		body := files[p]
		tw.WriteHeader(&tar.Header{Name: p, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))})
		io.WriteString(tw, body)
	}
	tw.Close()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}
