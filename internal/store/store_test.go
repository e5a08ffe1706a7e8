package store

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"microvm.dev/microvm/internal/testutil"
)

// entry is one tar entry of a test layer.
type entry struct {
	name, body, link string
	typ              byte
	mode             int64
	uid, gid         int
}

func layerTar(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
			if typ == tar.TypeDir {
				mode = 0o755
			}
		}
		h := &tar.Header{Name: e.name, Typeflag: typ, Mode: mode, Uid: e.uid, Gid: e.gid, Linkname: e.link, ModTime: mtime, Format: tar.FormatPAX}
		if typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, e.body)
	}
	tw.Close()
	return buf.Bytes()
}

func image(t testing.TB, cfg v1.Config, layers ...[]byte) v1.Image {
	t.Helper()
	img := empty.Image
	for _, b := range layers {
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	img, err := mutate.Config(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// testRegistry is go-containerregistry's registry served on loopback, with
// hooks to count, corrupt or slow blob requests.
type testRegistry struct {
	host    string
	mu      sync.Mutex
	gets    map[string]int // blob digest → GETs
	corrupt string         // blob digest served with a flipped byte
}

func newRegistry(t testing.TB) *testRegistry {
	t.Helper()
	r := &testRegistry{gets: map[string]int{}}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if i := strings.Index(req.URL.Path, "/blobs/sha256:"); i >= 0 && req.Method == http.MethodGet {
			d := req.URL.Path[i+len("/blobs/"):]
			r.mu.Lock()
			r.gets[d]++
			bad := d == r.corrupt
			r.mu.Unlock()
			if bad {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				b := rec.Body.Bytes()
				b[len(b)/2] ^= 0xff
				for k, v := range rec.Header() {
					w.Header()[k] = v
				}
				w.WriteHeader(rec.Code)
				w.Write(b)
				return
			}
		}
		h.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

func (r *testRegistry) push(t testing.TB, repo string, img v1.Image) string {
	t.Helper()
	ref := r.host + "/" + repo
	parsed, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(parsed, img); err != nil {
		t.Fatal(err)
	}
	return ref
}

func (r *testRegistry) blobGets() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for k, v := range r.gets {
		out[k] = v
	}
	return out
}

func layeredImage(t testing.TB) v1.Image {
	l1 := layerTar(t,
		entry{name: "etc/", typ: tar.TypeDir},
		entry{name: "etc/hostname", body: "image\n"},
		entry{name: "etc/shadow", body: "root:*:1::::::\n", mode: 0o640, gid: 42},
		entry{name: "bin/", typ: tar.TypeDir},
		entry{name: "bin/su", body: "#!/bin/sh\n", mode: 0o4755},
		entry{name: "bin/sh", body: "#!shell\n", mode: 0o755},
		entry{name: "bin/ash", typ: tar.TypeLink, link: "bin/sh"},
		entry{name: "usr/bin/env", typ: tar.TypeSymlink, link: "/bin/sh"},
		entry{name: "home/app/", typ: tar.TypeDir, mode: 0o750, uid: 1000, gid: 1000},
		entry{name: "home/app/data", body: "data", uid: 1000, gid: 1000},
		entry{name: "tmp/", typ: tar.TypeDir, mode: 0o1777},
		entry{name: "opq/old1", body: "old"},
		entry{name: "opq/sub/old2", body: "old"},
		entry{name: "gone", body: "bye"},
	)
	l2 := layerTar(t,
		entry{name: ".wh.gone"},
		entry{name: "opq/new", body: "new"},
		entry{name: "opq/.wh..wh..opq"},
		entry{name: "etc/hostname", body: "layer2\n"},
	)
	l3 := layerTar(t, entry{name: "srv/www/index.html", body: "<h1>hi</h1>\n"})
	return image(t, v1.Config{Entrypoint: []string{"/bin/httpd"}, Cmd: []string{"-f"}, Env: []string{"A=1"}, WorkingDir: "/srv", User: "app",
		ExposedPorts: map[string]struct{}{"8080/tcp": {}}}, l1, l2, l3)
}

func TestPullMultiLayerWithWhiteoutsAndModes(t *testing.T) {
	reg := newRegistry(t)
	ref := reg.push(t, "app:1", layeredImage(t))
	s := Open(t.TempDir())
	img, err := s.Pull(context.Background(), ref, Options{})
	if err != nil {
		t.Fatal(err)
	}
	root := s.TreeDir(img.ID)
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			return "<" + err.Error() + ">"
		}
		return string(b)
	}
	if got := read("etc/hostname"); got != "layer2\n" {
		t.Errorf("etc/hostname = %q: the upper layer wins", got)
	}
	if _, err := os.Lstat(filepath.Join(root, "gone")); !os.IsNotExist(err) {
		t.Error("the whiteout did not remove /gone")
	}
	if read("opq/new") != "new" {
		t.Error("the opaque directory lost the upper layer's file")
	}
	for _, p := range []string{"opq/old1", "opq/sub"} {
		if _, err := os.Lstat(filepath.Join(root, p)); !os.IsNotExist(err) {
			t.Errorf("the opaque marker left the lower layer's %s", p)
		}
	}
	for p, want := range map[string]os.FileMode{"bin/su": 0o755 | os.ModeSetuid, "etc/shadow": 0o640, "home/app": 0o750 | os.ModeDir, "tmp": 0o777 | os.ModeDir | os.ModeSticky} {
		fi, err := os.Lstat(filepath.Join(root, p))
		if err != nil || fi.Mode() != want {
			t.Errorf("%s mode = %v (%v), want %v", p, fi.Mode(), err, want)
		}
	}
	for p, want := range map[string][2]uint32{"home/app/data": {1000, 1000}, "etc/shadow": {0, 42}} {
		fi, _ := os.Lstat(filepath.Join(root, p))
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != want[0] || st.Gid != want[1] {
			t.Errorf("%s owner = %d:%d, want %d:%d", p, st.Uid, st.Gid, want[0], want[1])
		}
	}
	if l, _ := os.Readlink(filepath.Join(root, "usr/bin/env")); l != "/bin/sh" {
		t.Errorf("symlink = %q", l)
	}
	a, _ := os.Stat(filepath.Join(root, "bin/ash"))
	b, _ := os.Stat(filepath.Join(root, "bin/sh"))
	if !os.SameFile(a, b) {
		t.Error("the hard link is a copy")
	}
	if fi, _ := os.Stat(filepath.Join(root, "etc/hostname")); !fi.ModTime().Equal(time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("mtime = %v", fi.ModTime())
	}
	if c := img.Config; len(c.Entrypoint) != 1 || c.WorkingDir != "/srv" || c.User != "app" || c.ExposedPorts[0] != "8080/tcp" {
		t.Errorf("config = %+v", c)
	}
	got, err := s.Get(ref)
	if err != nil || got.ID != img.ID || got.Size == 0 || len(got.Layers) != 3 {
		t.Errorf("Get = %+v, %v", got, err)
	}
	assertNoTemp(t, s)
}

func TestCorruptLayerLeavesNothing(t *testing.T) {
	reg := newRegistry(t)
	img := layeredImage(t)
	ref := reg.push(t, "app:1", img)
	ls, _ := img.Layers()
	d, _ := ls[1].Digest()
	reg.corrupt = d.String()
	s := Open(t.TempDir())
	_, err := s.Pull(context.Background(), ref, Options{})
	if err == nil || !strings.Contains(err.Error(), "sha256 checksum") {
		t.Fatalf("err = %v, want a checksum mismatch", err)
	}
	if _, err := s.Get(ref); !errors.Is(err, ErrNotFound) {
		t.Errorf("the failed image has a name: %v", err)
	}
	entries, _ := os.ReadDir(s.Trees)
	for _, e := range entries {
		if e.Name() != ".tmp" {
			t.Errorf("store holds %s after a failed pull", e.Name())
		}
	}
	if _, err := os.Stat(s.BlobPath(d.String())); err == nil {
		t.Error("the corrupt blob was cached")
	}
	assertNoTemp(t, s)
	testutil.Report(t, testutil.FaultResult{Fault: "a registry serving a corrupted layer", Trials: 1, Result: "the pull fails on the digest; no name, tree, blob or temporary left"})
}

func TestInterruptedPullResumes(t *testing.T) {
	reg := newRegistry(t)
	var layers [][]byte
	for i := range 6 {
		layers = append(layers, layerTar(t, entry{name: "l" + string(rune('0'+i)), body: strings.Repeat("x", 100000+i)}))
	}
	img := image(t, v1.Config{}, layers...)
	ref := reg.push(t, "big:1", img)
	s := Open(t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	fetched := map[string]bool{}
	_, err := s.Pull(ctx, ref, Options{Jobs: 2, Progress: func(e Event) {
		if e.Kind == "fetched" {
			mu.Lock()
			fetched[e.Digest] = true
			if len(fetched) == 2 {
				cancel()
			}
			mu.Unlock()
		}
	}})
	if err == nil {
		t.Fatal("the interrupted pull succeeded")
	}
	if _, err := s.Get(ref); err == nil {
		t.Fatal("an interrupted pull became visible")
	}
	before := reg.blobGets()
	if _, err := s.Pull(context.Background(), ref, Options{Jobs: 2}); err != nil {
		t.Fatal(err)
	}
	after := reg.blobGets()
	for d := range fetched {
		if after[d] != before[d] {
			t.Errorf("layer %s was fetched again after the interruption", d)
		}
	}
	ls, _ := img.Layers()
	for _, l := range ls {
		d, _ := l.Digest()
		if after[d.String()] == 0 {
			t.Errorf("layer %s was never fetched", d)
		}
	}
	assertNoTemp(t, s)
	testutil.Report(t, testutil.FaultResult{Fault: "a pull interrupted after two layers", Trials: 1, Result: "nothing visible; the next pull fetches only the missing layers"})
}

func TestSameContentStoredOnce(t *testing.T) {
	reg := newRegistry(t)
	img := layeredImage(t)
	ref1 := reg.push(t, "app:1", img)
	ref2 := reg.push(t, "other/app:latest", img)
	s := Open(t.TempDir())
	a, err := s.Pull(context.Background(), ref1, Options{})
	if err != nil {
		t.Fatal(err)
	}
	before := reg.blobGets()
	var events []string
	b, err := s.Pull(context.Background(), ref2, Options{Progress: func(e Event) { events = append(events, e.Kind) }})
	if err != nil {
		t.Fatal(err)
	}
	if a.ID != b.ID {
		t.Errorf("same image, two trees: %s, %s", a.ID, b.ID)
	}
	after := reg.blobGets()
	cfgName, _ := img.ConfigName() // the small config is read to learn the layers
	for d, n := range after {
		if n != before[d] && d != cfgName.String() {
			t.Errorf("the second name fetched %s again", d)
		}
	}
	if strings.Join(events, ",") != "exists" {
		t.Errorf("events = %v, want only exists", events)
	}
	entries, _ := os.ReadDir(s.Trees)
	trees := 0
	for _, e := range entries {
		if idRE.MatchString(e.Name()) {
			trees++
		}
	}
	if trees != 1 {
		t.Errorf("%d trees for one image", trees)
	}
	list, _ := s.List()
	if len(list) != 2 {
		t.Errorf("list = %+v", list)
	}
}

func TestImportSources(t *testing.T) {
	img := layeredImage(t)
	dir := t.TempDir()
	// docker save archive
	archive := filepath.Join(dir, "app.tar")
	if err := tarball.WriteToFile(archive, name.MustParseReference("app:1"), img); err != nil {
		t.Fatal(err)
	}
	// OCI layout
	lp, err := layout.Write(filepath.Join(dir, "layout"), empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	// rootfs tarball and directory
	rootfs := filepath.Join(dir, "rootfs.tar")
	os.WriteFile(rootfs, layerTar(t, entry{name: "etc/hostname", body: "rootfs\n"}, entry{name: "bin/sh", body: "sh", mode: 0o755}), 0o644)
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(tree, "etc"), 0o755)
	os.WriteFile(filepath.Join(tree, "etc", "hostname"), []byte("tree\n"), 0o600)
	os.Symlink("hostname", filepath.Join(tree, "etc", "name"))

	s := Open(t.TempDir())
	want := map[string]string{"archive": "layer2\n", "layout": "layer2\n", "rootfs": "rootfs\n", "tree": "tree\n"}
	ids := map[string]string{}
	for n, src := range map[string]string{"archive": archive, "layout": filepath.Join(dir, "layout"), "rootfs": rootfs, "tree": tree} {
		got, err := s.Import(context.Background(), n, src, Options{})
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		b, _ := os.ReadFile(filepath.Join(s.TreeDir(got.ID), "etc/hostname"))
		if string(b) != want[n] {
			t.Errorf("%s: hostname = %q", n, b)
		}
		ids[n] = got.ID
	}
	if ids["archive"] != ids["layout"] {
		t.Error("the same image from a docker archive and an OCI layout got two trees")
	}
	if fi, _ := os.Stat(filepath.Join(s.TreeDir(ids["tree"]), "etc/hostname")); fi.Mode().Perm() != 0o600 {
		t.Errorf("directory import lost the mode: %v", fi.Mode())
	}
	again, err := s.Import(context.Background(), "tree2", tree, Options{})
	if err != nil || again.ID != ids["tree"] {
		t.Errorf("re-import of the same directory: %v, %v", again.ID, err)
	}
	if _, err := s.Import(context.Background(), "x", filepath.Join(dir, "missing"), Options{}); err == nil {
		t.Error("missing source accepted")
	}
	for _, bad := range []string{"../etc", "a b", strings.Repeat("a", 64)} {
		if _, err := s.Import(context.Background(), bad, tree, Options{}); err == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
	assertNoTemp(t, s)
}

func TestHostileLayers(t *testing.T) {
	outside := t.TempDir()
	for name, layers := range map[string][][]byte{
		"dotdot":         {layerTar(t, entry{name: "../../escape", body: "x"})},
		"through link":   {layerTar(t, entry{name: "link", typ: tar.TypeSymlink, link: outside}), layerTar(t, entry{name: "link/escape", body: "x"})},
		"hardlink out":   {layerTar(t, entry{name: "h", typ: tar.TypeLink, link: "../../etc/passwd"})},
		"same layer via": {layerTar(t, entry{name: "l", typ: tar.TypeSymlink, link: outside}, entry{name: "l/escape", body: "x"})},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			lp, _ := layout.Write(filepath.Join(dir, "layout"), empty.Index)
			lp.AppendImage(image(t, v1.Config{}, layers...))
			s := Open(t.TempDir())
			if _, err := s.Import(context.Background(), "evil", filepath.Join(dir, "layout"), Options{}); err == nil {
				t.Error("hostile layer accepted")
			}
			if _, err := os.Stat(filepath.Join(outside, "escape")); err == nil {
				t.Error("a file was written outside the image root")
			}
			assertNoTemp(t, s)
		})
	}
	testutil.Report(t, testutil.FaultResult{Fault: "hostile image layers (.. paths, symlink and hard-link escapes)", Trials: 4, Result: "refused; nothing written outside the image root"})
}

func TestGC(t *testing.T) {
	reg := newRegistry(t)
	s := Open(t.TempDir())
	used := reg.push(t, "used:1", layeredImage(t))
	unused := reg.push(t, "unused:1", image(t, v1.Config{}, layerTar(t, entry{name: "only", body: "here"})))
	u, err := s.Pull(context.Background(), used, Options{})
	if err != nil {
		t.Fatal(err)
	}
	x, err := s.Pull(context.Background(), unused, Options{})
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(s.Trees, "base", "etc"), 0o755) // a hand-made image
	res, err := s.GC(map[string]bool{used: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Names) != 1 || res.Names[0] != unused || len(res.Trees) != 1 || res.Trees[0] != x.ID || res.Blobs != 1 {
		t.Errorf("gc = %+v", res)
	}
	if _, err := os.Stat(s.TreeDir(u.ID)); err != nil {
		t.Error("gc removed an image in use")
	}
	for _, l := range u.Layers {
		if _, err := os.Stat(s.BlobPath(l)); err != nil {
			t.Errorf("gc removed blob %s of an image in use", l)
		}
	}
	if _, err := s.Get("base"); err != nil {
		t.Error("gc removed a hand-made image directory")
	}
}

func assertNoTemp(t *testing.T, s *Store) {
	t.Helper()
	entries, _ := os.ReadDir(s.tmpDir())
	for _, e := range entries {
		t.Errorf("temporary %s left behind", e.Name())
	}
	partials, _ := filepath.Glob(filepath.Join(s.meta, "blobs", "sha256", "*.partial-*"))
	for _, p := range partials {
		t.Errorf("partial blob %s left behind", p)
	}
}
