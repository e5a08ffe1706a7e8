package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// The pull pipeline under load: more layers than fetchers, a config that
// comes late, a damaged cached blob, pulls sharing trees.

// A config fetched after the layers have taken their fetch slots, with
// layers too large (and incompressible) to finish before the unpacker reads
// them, which it does only once the config is in: the config must still
// get a slot (go-containerregistry's limit counts it too).
func TestConfigFetchedWhileLayersWait(t *testing.T) {
	reg := newRegistry(t)
	rng := rand.New(rand.NewPCG(3, 4))
	var layers [][]byte
	for i := range 3 {
		body := make([]byte, 3<<20) // more than a layer's chunks in flight
		for k := range body {
			body[k] = byte(rng.Uint32())
		}
		layers = append(layers, layerTar(t, entry{name: fmt.Sprintf("r%d", i), body: string(body)}))
	}
	ref := reg.push(t, "slowconfig:1", image(t, v1.Config{}, layers...))
	for _, jobs := range []int{1, 2} {
		s := Open(t.TempDir())
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		r, _ := name.ParseReference(ref)
		o := Options{Jobs: jobs}
		img, err := remote.Image(r, remoteOptions(ctx, o)...)
		if err == nil {
			_, err = s.install(ctx, ref, ref, lateConfig{img}, true, o)
		}
		cancel()
		if err != nil {
			t.Fatalf("jobs %d: %v", jobs, err)
		}
	}
}

// lateConfig is an image whose config is asked for only after its layers
// have had time to start.
type lateConfig struct{ v1.Image }

func (l lateConfig) ConfigFile() (*v1.ConfigFile, error) {
	time.Sleep(200 * time.Millisecond)
	return l.Image.ConfigFile()
}

// TestManyLargeLayersConcurrently pulls more layers than fetchers, each
// larger than what one stream buffers, so fetchers wait on the unpacker
// while holding registry connections. When the registry client allowed
// fewer blob fetches than there were fetchers this deadlocked in
// bench/cmd/pullbench (69 layers); here the same shape is pulled, but
// whether the old code would hang depends on goroutine timing, so this
// test guards the path rather than proving the fix.
func TestManyLargeLayersConcurrently(t *testing.T) {
	reg := newRegistry(t)
	var layers [][]byte
	for i := range 12 {
		layers = append(layers, layerTar(t, entry{name: fmt.Sprintf("l%02d", i), body: strings.Repeat(string(rune('a'+i)), 3<<20)}))
	}
	ref := reg.push(t, "many:1", image(t, v1.Config{}, layers...))
	s := Open(t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	img, err := s.Pull(ctx, ref, Options{Jobs: 8})
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(s.TreeDir(img.ID), "l11")); err != nil || fi.Size() != 3<<20 {
		t.Errorf("last layer: %v %v", fi, err)
	}
}

// A cached blob damaged on disk fails the pull with the layer named, is
// dropped, and the next pull fetches it again and succeeds.
func TestDamagedCachedBlobIsFetchedAgain(t *testing.T) {
	reg := newRegistry(t)
	img := layeredImage(t)
	ref := reg.push(t, "app:1", img)
	s := Open(t.TempDir())
	first, err := s.Pull(context.Background(), ref, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Forget the image, then leave a damaged entry for its first layer.
	if _, err := s.GC(map[string]bool{}); err != nil {
		t.Fatal(err)
	}
	blob := s.BlobPath(first.Layers[0])
	if err := os.WriteFile(blob, []byte("not a layer"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pull(context.Background(), ref, Options{}); err == nil || !strings.Contains(err.Error(), "layer 1") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(blob); !os.IsNotExist(err) {
		t.Error("the damaged blob is still cached")
	}
	if _, err := s.Pull(context.Background(), ref, Options{}); err != nil {
		t.Fatalf("the pull after dropping the damaged blob: %v", err)
	}
}

// Pulls of one image at once into stores whose trees are shared but whose
// name tables (and their lock) are not, as the e2e labs share one store's
// trees, all succeed with the same tree: whichever renames its tree into
// place second takes the first one's (trees are named by their content).
func TestConcurrentPullsIntoSharedTrees(t *testing.T) {
	reg := newRegistry(t)
	ref := reg.push(t, "app:1", layeredImage(t))
	shared := t.TempDir()
	const n = 4
	errs, ids := make([]error, n), make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		dir := t.TempDir()
		if err := os.Symlink(shared, filepath.Join(dir, "store")); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			img, err := Open(dir).Pull(context.Background(), ref, Options{})
			errs[i], ids[i] = err, img.ID
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || ids[i] != ids[0] {
			t.Errorf("pull %d: %v (tree %s, first %s)", i, errs[i], ids[i], ids[0])
		}
	}
	if left, _ := os.ReadDir(filepath.Join(shared, ".tmp")); len(left) != 0 {
		t.Errorf("temporary trees left: %d", len(left))
	}
}
