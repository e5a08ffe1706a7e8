package store

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Options tune an import or pull.
type Options struct {
	// Jobs is how many layers are fetched at once (default 8). With 1, each
	// layer is fetched and unpacked before the next is requested, the way
	// the reference setup's image pull works.
	Jobs int
	// Arch is the guest architecture in GOARCH spelling (default the host's);
	// it picks the image from a multi-platform index.
	Arch string
	// Progress, when set, receives events as layers are fetched and
	// unpacked; its calls never overlap.
	Progress func(Event)
	// Remote are extra options for registry access (tests give a transport).
	Remote []remote.Option
	// Keychain, when set, gives the registry logins tried before the
	// docker config file's (the file's host.registries).
	Keychain authn.Keychain
	// Config, when set, is how the imported image runs (a directory or
	// rootfs tarball has no config of its own; for images with one, the
	// fields set here replace theirs).
	Config *Config
	// Verify, when set, checks a pull's signatures before any layer is
	// fetched, given the repository and the reference's digests (its own,
	// then the platform manifest's when it is an index) and the registry
	// options; it returns the IDs of the keys that signed it, recorded as
	// the image's signers. Its error stops the pull.
	Verify VerifyFunc
	// Trust records an imported image as trusted by the operator
	// (microvm image import --trust): an image policy lets it boot unsigned.
	Trust bool
	// signers are what Verify returned, for install to record.
	signers []string
}

// VerifyFunc checks the signatures of the image with digests in repo
// (opts reach its registry) and returns the IDs of the keys that made them.
type VerifyFunc func(ctx context.Context, repo name.Repository, digests []v1.Hash, opts []remote.Option) ([]string, error)

// overlay lays the fields set in o over c.
func overlay(c Config, o *Config) Config {
	if o == nil {
		return c
	}
	if len(o.Entrypoint) > 0 {
		c.Entrypoint = o.Entrypoint
	}
	if len(o.Cmd) > 0 {
		c.Cmd = o.Cmd
	}
	if len(o.Env) > 0 {
		c.Env = o.Env
	}
	if o.WorkingDir != "" {
		c.WorkingDir = o.WorkingDir
	}
	if o.User != "" {
		c.User = o.User
	}
	if o.StopSignal != "" {
		c.StopSignal = o.StopSignal
	}
	if len(o.Volumes) > 0 {
		c.Volumes = o.Volumes
	}
	if len(o.ExposedPorts) > 0 {
		c.ExposedPorts = o.ExposedPorts
	}
	return c
}

// Event reports progress of one layer.
type Event struct {
	// Kind is "fetched" (downloaded and verified), "cached" (already had it),
	// "unpacked", or "exists" (the whole tree was already in the store).
	Kind   string `json:"kind"`
	Layer  int    `json:"layer"`
	Layers int    `json:"layers"`
	Digest string `json:"digest,omitempty"`
	Bytes  int64  `json:"bytes,omitempty"`
}

func (o Options) jobs() int {
	if o.Jobs <= 0 {
		return 8
	}
	return o.Jobs
}

func (o Options) emit(e Event) {
	if o.Progress != nil {
		o.Progress(e)
	}
}

// Pull fetches ref from its registry (credentials from the docker config
// file, as docker and crane use) and records it under the reference.
func (s *Store) Pull(ctx context.Context, ref string, o Options) (Image, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return Image{}, fmt.Errorf("image %q: %w", ref, err)
	}
	opts := remoteOptions(ctx, o)
	// One puller for the whole pull: the registry's ping and token are
	// asked once, for the manifest, the signature lookups and the layers.
	puller, err := remote.NewPuller(opts...)
	if err != nil {
		return Image{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	opts = append(opts, remote.Reuse(puller))
	desc, err := remote.Get(r, opts...)
	if err != nil {
		return Image{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	img, err := desc.Image() // the platform's image of an index
	if err != nil {
		return Image{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	digest, err := img.Digest()
	if err != nil {
		return Image{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	if o.Verify != nil {
		digests := []v1.Hash{desc.Digest}
		if digest != desc.Digest {
			digests = append(digests, digest)
		}
		if o.signers, err = o.Verify(ctx, r.Context(), digests, opts); err != nil {
			return Image{}, fmt.Errorf("pull %s: %w", ref, err)
		}
	}
	o.Trust = false // a pull is trusted by its signatures only
	return s.install(ctx, ref, r.Context().Name()+"@"+digest.String(), img, true, o)
}

// remoteOptions are the registry options of a pull: credentials from the
// docker config, the platform, and the blob fetch limit.
func remoteOptions(ctx context.Context, o Options) []remote.Option {
	arch := o.Arch
	if arch == "" {
		arch = runtime.GOARCH
	}
	var keychain authn.Keychain = authn.DefaultKeychain
	if o.Keychain != nil {
		keychain = authn.NewMultiKeychain(o.Keychain, authn.DefaultKeychain)
	}
	return append([]remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(keychain),
		remote.WithPlatform(v1.Platform{OS: "linux", Architecture: arch}),
		// go-containerregistry limits blob fetches in flight (4 by default),
		// the config's included, and a layer waiting for the unpacker holds
		// its slot: one slot per fetcher, or later layers could starve the
		// one being unpacked, and one more for the config, which is fetched
		// while the layers already stream (each fetcher holds one slot at a
		// time, so the config always finds one).
		remote.WithJobs(o.jobs() + 1),
	}, o.Remote...)
}

// Import records the image at src under name. src is a directory (its
// tree is copied), a rootfs tarball (plain, gzip or zstd), a `docker save`
// archive, or an OCI image layout directory.
func (s *Store) Import(ctx context.Context, imgName, src string, o Options) (Image, error) {
	if err := CheckName(imgName); err != nil {
		return Image{}, err
	}
	fi, err := os.Stat(src)
	if err != nil {
		return Image{}, fmt.Errorf("import %s: %w", src, err)
	}
	abs, _ := filepath.Abs(src)
	if fi.IsDir() {
		if _, err := os.Stat(filepath.Join(src, "oci-layout")); err == nil {
			img, err := layoutImage(src, o)
			if err != nil {
				return Image{}, fmt.Errorf("import OCI layout %s: %w", src, err)
			}
			return s.install(ctx, imgName, "oci-layout:"+abs, img, false, o)
		}
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(TarTree(pw, src)) }()
		defer pr.Close()
		return s.installTar(ctx, imgName, "dir:"+abs, pr, o)
	}
	if img, err := tarball.ImageFromPath(src, nil); err == nil {
		if _, err := img.ConfigFile(); err == nil {
			return s.install(ctx, imgName, "docker-archive:"+abs, img, false, o)
		}
	}
	f, err := os.Open(src)
	if err != nil {
		return Image{}, err
	}
	defer f.Close()
	rd, err := decompress(f)
	if err != nil {
		return Image{}, fmt.Errorf("import %s: %w", src, err)
	}
	return s.installTar(ctx, imgName, "tarball:"+abs, rd, o)
}

// CheckName refuses names that are neither store names nor references.
func CheckName(n string) error {
	if n == "" || strings.Contains(n, "..") || strings.ContainsAny(n, " \t\n\x00\\") {
		return fmt.Errorf("image name %q is not a store image name nor an OCI reference", n)
	}
	if strings.ContainsAny(n, "/:@") {
		if _, err := name.ParseReference(n); err != nil {
			return fmt.Errorf("image name %q: %w", n, err)
		}
	} else if idRE.MatchString(n) {
		return fmt.Errorf("image name %q looks like a tree id; pick another", n)
	}
	return nil
}

// layoutImage picks the image for the platform from an OCI layout.
func layoutImage(dir string, o Options) (v1.Image, error) {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, err
	}
	arch := o.Arch
	if arch == "" {
		arch = runtime.GOARCH
	}
	for depth := 0; depth < 4; depth++ {
		im, err := idx.IndexManifest()
		if err != nil {
			return nil, err
		}
		if len(im.Manifests) == 0 {
			return nil, errors.New("the layout holds no image")
		}
		pick := im.Manifests[0]
		for _, m := range im.Manifests {
			if m.Platform != nil && m.Platform.OS == "linux" && m.Platform.Architecture == arch {
				pick = m
				break
			}
		}
		if pick.MediaType.IsIndex() {
			if idx, err = idx.ImageIndex(pick.Digest); err != nil {
				return nil, err
			}
			continue
		}
		return idx.Image(pick.Digest)
	}
	return nil, errors.New("image indexes nested too deeply")
}

// ChainID is the tree id of layers with these uncompressed digests: the
// first digest, then sha256("<previous> <next>") for each next one (the
// OCI image spec's ChainID), as bare hex.
func ChainID(diffIDs []v1.Hash) string {
	if len(diffIDs) == 0 {
		sum := sha256.Sum256(nil)
		return hex.EncodeToString(sum[:])
	}
	id := diffIDs[0].String()
	for _, d := range diffIDs[1:] {
		sum := sha256.Sum256([]byte(id + " " + d.String()))
		id = "sha256:" + hex.EncodeToString(sum[:])
	}
	return strings.TrimPrefix(id, "sha256:")
}

// install unpacks img's layers into a new tree (unless the store has it)
// and names it. Layers are fetched (and, from a registry, cached as blobs)
// concurrently and unpacked in order as they arrive.
func (s *Store) install(ctx context.Context, imgName, source string, img v1.Image, cache bool, o Options) (Image, error) {
	if f := o.Progress; f != nil {
		var mu sync.Mutex
		o.Progress = func(e Event) { mu.Lock(); defer mu.Unlock(); f(e) }
	}
	layers, err := img.Layers() // the manifest's list: no config needed
	if err != nil {
		return Image{}, fmt.Errorf("%s: layers: %w", source, err)
	}
	// Layers not cached yet start downloading while the config is fetched
	// (one round trip less before the first byte). ready is closed only
	// once the tree is to be made: until then no layer is checked, cached
	// or reported, so an image whose content is stored already leaves no
	// trace (its downloads are cancelled).
	p := &pipeline{s: s, layers: layers, cache: cache, o: o, ready: make(chan struct{})}
	streams, stop := p.start(ctx)
	defer stop()
	cf, err := img.ConfigFile()
	if err == nil && len(cf.RootFS.DiffIDs) != len(layers) {
		err = fmt.Errorf("the config lists %d layers, the manifest %d", len(cf.RootFS.DiffIDs), len(layers))
	}
	if err != nil {
		return Image{}, fmt.Errorf("%s: config: %w", source, err)
	}
	p.diffIDs = cf.RootFS.DiffIDs
	out := Image{Name: imgName, ID: ChainID(p.diffIDs), Source: source, Config: overlay(configOf(cf), o.Config), Signers: o.signers, Trusted: o.Trust}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return Image{}, err
		}
		out.Layers = append(out.Layers, d.String())
	}
	if !cache {
		out.Layers = nil
	}
	unlock, err := s.lock()
	if err != nil {
		return Image{}, err
	}
	defer unlock()
	if _, err := os.Stat(s.TreeDir(out.ID)); err == nil {
		// Identical content is stored once: only the name is new.
		o.emit(Event{Kind: "exists", Layers: len(layers)})
		out.Size = treeSize(s.TreeDir(out.ID))
		return out, s.setName(out)
	}
	tmp, u, err := s.newTmp(out.ID, o)
	if err != nil {
		return Image{}, err
	}
	defer removeTree(tmp) // a no-op once renamed
	defer u.close()
	close(p.ready)
	for i, ls := range streams {
		rd := p.reader(ls)
		err := u.layer(rd)
		if err == nil {
			_, err = io.Copy(io.Discard, rd) // the tar's end padding
		}
		if err == nil && p.o.jobs() == 1 {
			err = u.drain() // one layer at a time: this one is on disk before the next
		}
		if err != nil {
			// A damaged download often breaks the tar before its digest
			// check runs: read the layer to its end and report the cause.
			for range ls.chunks {
			}
			<-ls.done
			if ls.err == nil {
				return Image{}, fmt.Errorf("%s: layer %d: %w", source, i+1, err)
			}
		}
		<-ls.done
		if ls.err != nil {
			return Image{}, fmt.Errorf("%s: layer %d (%s): %w", source, i+1, layerDigest(layers[i]), ls.err)
		}
		close(ls.consumed)
		o.emit(Event{Kind: "unpacked", Layer: i + 1, Layers: len(layers)})
	}
	if err := u.close(); err != nil {
		return Image{}, fmt.Errorf("%s: %w", source, err)
	}
	return s.finish(tmp, out)
}

// layerDigest names a layer for an error.
func layerDigest(l v1.Layer) string {
	if d, err := l.Digest(); err == nil {
		return d.String()
	}
	return "?"
}

// installTar unpacks one uncompressed tar stream as a single-layer image;
// its digest is the tree id.
func (s *Store) installTar(ctx context.Context, imgName, source string, r io.Reader, o Options) (Image, error) {
	unlock, err := s.lock()
	if err != nil {
		return Image{}, err
	}
	defer unlock()
	tmp, u, err := s.newTmp("import", o)
	if err != nil {
		return Image{}, err
	}
	defer removeTree(tmp)
	defer u.close()
	h := sha256.New()
	tee := io.TeeReader(r, h)
	if err := u.layer(tee); err != nil {
		return Image{}, fmt.Errorf("%s: %w", source, err)
	}
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return Image{}, fmt.Errorf("%s: %w", source, err)
	}
	if err := u.close(); err != nil {
		return Image{}, fmt.Errorf("%s: %w", source, err)
	}
	if err := ctx.Err(); err != nil {
		return Image{}, err
	}
	o.emit(Event{Kind: "unpacked", Layer: 1, Layers: 1})
	d, _ := v1.NewHash("sha256:" + hex.EncodeToString(h.Sum(nil)))
	out := Image{Name: imgName, ID: ChainID([]v1.Hash{d}), Source: source, Config: overlay(Config{}, o.Config), Trusted: o.Trust}
	if _, err := os.Stat(s.TreeDir(out.ID)); err == nil {
		out.Size = treeSize(s.TreeDir(out.ID))
		return out, s.setName(out)
	}
	return s.finish(tmp, out)
}

// newTmp makes a temporary directory in the store to unpack into, and its
// unpacker with one file worker per job (up to the CPUs, at least 2).
func (s *Store) newTmp(hint string, o Options) (string, *unpacker, error) {
	if err := os.MkdirAll(s.tmpDir(), 0o700); err != nil {
		return "", nil, fmt.Errorf("image store: %w", err)
	}
	tmp, err := os.MkdirTemp(s.tmpDir(), hint[:min(12, len(hint))]+"-")
	if err != nil {
		return "", nil, fmt.Errorf("image store: %w", err)
	}
	return tmp, newUnpacker(tmp, min(o.jobs(), max(2, runtime.NumCPU()))), nil
}

// finish renames the unpacked tree into place and names it.
func (s *Store) finish(tmp string, out Image) (Image, error) {
	if err := os.Chmod(tmp, 0o755); err != nil {
		return Image{}, err
	}
	if err := os.Rename(tmp, s.TreeDir(out.ID)); err != nil {
		// Another pull of the same layers (another VM's start, another
		// daemon on the store) put the same tree in place first: trees are
		// named by their content and renamed in whole, so it is this one.
		if _, serr := os.Stat(s.TreeDir(out.ID)); serr != nil {
			return Image{}, fmt.Errorf("image store: %w", err)
		}
		os.RemoveAll(tmp)
	}
	syncDir(s.Trees)
	out.Size = treeSize(s.TreeDir(out.ID))
	return out, s.setName(out)
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// ctxReader stops a copy when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// decompress detects gzip and zstd by their magic numbers; anything else
// is read as a plain tar.
func decompress(r io.Reader) (io.Reader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, _ := br.Peek(4)
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		return gzip.NewReader(br)
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		z, err := zstd.NewReader(br)
		if err != nil {
			return nil, err
		}
		return z.IOReadCloser(), nil
	}
	return br, nil
}

func configOf(cf *v1.ConfigFile) Config {
	c := cf.Config
	out := Config{Entrypoint: c.Entrypoint, Cmd: c.Cmd, Env: c.Env, WorkingDir: c.WorkingDir, User: c.User, StopSignal: c.StopSignal}
	for p := range c.ExposedPorts {
		out.ExposedPorts = append(out.ExposedPorts, p)
	}
	sort.Strings(out.ExposedPorts)
	for v := range c.Volumes {
		out.Volumes = append(out.Volumes, v)
	}
	sort.Strings(out.Volumes)
	return out
}

// TarTree writes the tree at dir as a tar stream in a stable order, with
// owners, modes, times, links and device numbers.
func TarTree(w io.Writer, dir string) error {
	tw := tar.NewWriter(w)
	links := map[uint64]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		h.Name = rel
		if fi.IsDir() {
			h.Name += "/"
		}
		h.Uname, h.Gname = "", ""
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			h.Uid, h.Gid = int(st.Uid), int(st.Gid)
			if fi.Mode().IsRegular() && st.Nlink > 1 {
				if first, ok := links[st.Ino]; ok {
					h.Typeflag, h.Linkname, h.Size = tar.TypeLink, first, 0
				} else {
					links[st.Ino] = rel
				}
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if h.Typeflag == tar.TypeReg {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
