package e2e

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/store"
)

// TestOCIImageServesItsPort builds an OCI image locally (the base image's
// tree as one layer, a web root as another, busybox httpd as entrypoint),
// serves it from go-containerregistry's registry on loopback, and boots a
// VM whose image: is that reference. The VM pulls it on first start, runs
// the entrypoint as its workload and answers on its declared port from the
// host; writes inside the VM never reach the store.
func TestOCIImageServesItsPort(t *testing.T) {
	requireGuestEnv(t)
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	ref := strings.TrimPrefix(srv.URL, "http://") + "/web:1"

	base := baseLayer(t)
	const page = "<h1>served from an OCI image</h1>\n"
	webLayer := filesLayer(t, map[string]string{"www/index.html": page})
	img, err := mutate.AppendLayers(empty.Image, base, webLayer)
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.Config(img, v1.Config{Entrypoint: []string{"/bin/busybox", "httpd", "-f", "-p", "8080"}, Cmd: []string{"-h", "/www"}})
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(parsed, img); err != nil {
		t.Fatal(err)
	}

	ns, cfg := netLab(t, "oci", fmt.Sprintf("vms:\n  web: { index: 1, memory: 512M, image: %q, ports: [8080] }\n  web2: { index: 2, memory: 512M, image: %q }\n", ref, ref))
	env := newEnv(t, ns)
	p, r := boot(t, env, cfg.VM("web"))
	pulled, err := store.Open(env.StateDir).Get(ref)
	if err != nil {
		t.Fatalf("the VM's image is not in the store after its start: %v", err)
	}
	tree := store.Open(env.StateDir).TreeDir(pulled.ID)
	if p.Launch.Shares[0].Path != tree {
		t.Errorf("the VM shares %s, not its image tree %s", p.Launch.Shares[0].Path, tree)
	}
	got := httpGet(t, ns, net.JoinHostPort(cfg.VM("web").Net.Address.String(), "8080"))
	if !strings.Contains(got, page) {
		t.Errorf("GET / from the host = %q, want the image's page", got)
	}

	c := sshTo(t, ns, p)
	run(t, c, "echo changed > /www/index.html && echo evil > /etc/evil")
	if out, err := runErr(c, "mount -o remount,rw /run/microvm/store; echo evil > /run/microvm/store/www/index.html"); err == nil {
		t.Errorf("the guest wrote through to the store: %q", out)
	}
	stop(t, r)
	if b, _ := os.ReadFile(filepath.Join(tree, "www", "index.html")); string(b) != page {
		t.Errorf("the store's index.html is now %q", b)
	}
	if _, err := os.Stat(filepath.Join(tree, "etc", "evil")); err == nil {
		t.Error("a file the guest wrote reached the store")
	}

	// A second VM on the same image copies nothing: same tree, no pull.
	blobs, _ := filepath.Glob(filepath.Join(env.StateDir, "images", "blobs", "sha256", "*"))
	p2, err := launch.Prepare(context.Background(), env, cfg.VM("web2"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if p2.Launch.Shares[0].Path != tree {
		t.Errorf("the second VM shares %s, want the same tree %s", p2.Launch.Shares[0].Path, tree)
	}
	after, _ := filepath.Glob(filepath.Join(env.StateDir, "images", "blobs", "sha256", "*"))
	if len(after) != len(blobs) {
		t.Errorf("the second VM fetched layers: %d blobs before, %d after", len(blobs), len(after))
	}
}

// httpGet fetches / from addr inside ns with a plain HTTP/1.0 request,
// retrying until the server answers.
func httpGet(t *testing.T, ns interface{ Do(testing.TB, func()) }, addr string) string {
	t.Helper()
	return waitHTTP(t, ns, addr, 30*time.Second)
}
