// Package store keeps the VMs' root images: read-only directory trees under
// <state>/store/<id>, content-addressed (the id is the chain of the layers'
// uncompressed digests, so identical content is stored once however many
// names and VMs use it), with names (store names such as "base", and OCI
// references) recorded in <state>/images/names.json. Layer blobs fetched
// from registries are cached under <state>/images/blobs by digest, so an
// interrupted pull resumes without fetching finished layers again. An
// import never becomes visible half done: it is unpacked in a temporary
// directory next to the store and renamed into place.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"

	"microvm.dev/microvm/internal/apitypes"

	"golang.org/x/sys/unix"

	"microvm.dev/microvm/internal/state"
)

// Store is the image store of one state directory.
type Store struct {
	// Trees is the directory holding the image trees (<state>/store).
	Trees string
	// meta holds names.json, blobs/ and tmp/ (<state>/images).
	meta string
}

// Open returns the store of stateDir.
func Open(stateDir string) *Store {
	return &Store{Trees: filepath.Join(stateDir, "store"), meta: filepath.Join(stateDir, "images")}
}

// Config is what an image says about running it (from its OCI config).
type Config = apitypes.ImageConfig

// Image is one named image.
type Image = apitypes.Image

// idRE is a tree id: 64 hex digits.
var idRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// IsTreeID reports whether id names a content-addressed tree (a chain id),
// whose content never changes, rather than a plain directory.
func IsTreeID(id string) bool { return idRE.MatchString(id) }

// TreeDir is the directory of the tree with id.
func (s *Store) TreeDir(id string) string { return filepath.Join(s.Trees, id) }

func (s *Store) namesPath() string { return filepath.Join(s.meta, "names.json") }

// BlobPath is where a cached blob with digest "sha256:<hex>" lives.
func (s *Store) BlobPath(digest string) string {
	algo, hex, _ := strings.Cut(digest, ":")
	return filepath.Join(s.meta, "blobs", algo, hex)
}

// lock serializes changes to the store across processes until the
// returned func is called.
func (s *Store) lock() (func(), error) {
	if err := os.MkdirAll(s.meta, 0o700); err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(s.meta, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("image store lock: %w", err)
	}
	return func() { unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
}

// names reads the name table; a missing table is empty, a corrupt one an error.
func (s *Store) names() (map[string]Image, error) {
	b, err := os.ReadFile(s.namesPath())
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]Image{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	m := map[string]Image{}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("image store: %s is corrupt: %w", s.namesPath(), err)
	}
	return m, nil
}

func (s *Store) writeNames(m map[string]Image) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return state.WriteFile(s.namesPath(), append(b, '\n'), 0o600)
}

// setName records img under its name (the caller holds the lock).
func (s *Store) setName(img Image) error {
	m, err := s.names()
	if err != nil {
		return err
	}
	img.Imported = time.Now().UTC()
	m[img.Name] = img
	return s.writeNames(m)
}

// ErrNotFound says an image name is not in the store.
var ErrNotFound = errors.New("not in the image store")

// Get returns the image named name. A plain directory store/<name> made
// by hand or by scripts/build-base-image.sh counts as an image with that
// name and no config.
func (s *Store) Get(name string) (Image, error) {
	m, err := s.names()
	if err != nil {
		return Image{}, err
	}
	if img, ok := m[name]; ok {
		return img, nil
	}
	if !strings.ContainsAny(name, "/:@") && !idRE.MatchString(name) {
		if fi, err := os.Stat(filepath.Join(s.Trees, name)); err == nil && fi.IsDir() {
			return Image{Name: name, ID: name, Source: filepath.Join(s.Trees, name)}, nil
		}
	}
	return Image{}, fmt.Errorf("image %q: %w", name, ErrNotFound)
}

// List returns every named image, by name.
func (s *Store) List() ([]Image, error) {
	m, err := s.names()
	if err != nil {
		return nil, err
	}
	out := make([]Image, 0, len(m))
	for _, img := range m {
		out = append(out, img)
	}
	entries, _ := os.ReadDir(s.Trees)
	for _, e := range entries {
		if _, named := m[e.Name()]; e.IsDir() && !named && !idRE.MatchString(e.Name()) && !strings.HasPrefix(e.Name(), ".") {
			if img, err := s.Get(e.Name()); err == nil {
				img.Size = treeSize(s.TreeDir(img.ID))
				out = append(out, img)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Remove drops the name (not the tree; GC removes unreferenced trees).
func (s *Store) Remove(name string) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	m, err := s.names()
	if err != nil {
		return err
	}
	if _, ok := m[name]; !ok {
		return fmt.Errorf("image %q: %w", name, ErrNotFound)
	}
	delete(m, name)
	return s.writeNames(m)
}

// GCResult says what GC removed.
type GCResult struct {
	Names      []string `json:"names"`
	Trees      []string `json:"trees"`
	Blobs      int      `json:"blobs"`
	FreedBytes int64    `json:"freedBytes"`
}

// GC removes the names not in keep, then every tree, cached blob and
// leftover temporary directory that no remaining name references. The
// caller passes in keep every image a VM or a retained generation uses;
// those are never removed.
func (s *Store) GC(keep map[string]bool) (GCResult, error) {
	var res GCResult
	unlock, err := s.lock()
	if err != nil {
		return res, err
	}
	defer unlock()
	m, err := s.names()
	if err != nil {
		return res, err
	}
	for name := range m {
		if !keep[name] {
			delete(m, name)
			res.Names = append(res.Names, name)
		}
	}
	sort.Strings(res.Names)
	if err := s.writeNames(m); err != nil {
		return res, err
	}
	trees, blobs := map[string]bool{}, map[string]bool{}
	for _, img := range m {
		trees[img.ID] = true
		for _, l := range img.Layers {
			blobs[l] = true
		}
	}
	entries, _ := os.ReadDir(s.Trees)
	for _, e := range entries {
		if !idRE.MatchString(e.Name()) || trees[e.Name()] {
			continue // plain directories are the user's; kept
		}
		dir := s.TreeDir(e.Name())
		res.FreedBytes += treeSize(dir)
		if err := removeTree(dir); err != nil {
			return res, err
		}
		res.Trees = append(res.Trees, e.Name())
	}
	blobDir := filepath.Join(s.meta, "blobs", "sha256")
	bents, _ := os.ReadDir(blobDir)
	for _, e := range bents {
		if blobs["sha256:"+e.Name()] {
			continue
		}
		if fi, err := e.Info(); err == nil {
			res.FreedBytes += fi.Size()
		}
		os.Remove(filepath.Join(blobDir, e.Name()))
		res.Blobs++
	}
	tmps, _ := os.ReadDir(s.tmpDir())
	for _, e := range tmps {
		removeTree(filepath.Join(s.tmpDir(), e.Name()))
	}
	return res, nil
}

func (s *Store) tmpDir() string { return filepath.Join(s.Trees, ".tmp") }

// removeTree deletes a tree even where it holds read-only directories.
func removeTree(dir string) error {
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(dir)
}

// treeSize sums the sizes of a tree's regular files (hard links once).
func treeSize(dir string) int64 {
	var n int64
	seen := map[uint64]bool{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
			if seen[st.Ino] {
				return nil
			}
			seen[st.Ino] = true
		}
		n += fi.Size()
		return nil
	})
	return n
}
