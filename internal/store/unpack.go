package store

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// OCI whiteout markers: ".wh.<name>" deletes <name> from the layers below;
// ".wh..wh..opq" in a directory hides everything below in that directory.
const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
)

// unpacker applies layers, in order, to one root directory.
type unpacker struct {
	root string
	// dirTimes are set once a layer is done (writing into a directory
	// changes its time).
	dirTimes map[string]time.Time
}

// layer extracts one uncompressed layer tar into the root: ownership,
// modes (set-id bits included), times, symlinks, hard links, device nodes
// and FIFOs as recorded, whiteouts applied to the layers below. An entry
// that would land outside the root (absolute or ".." paths, or a path
// through a symlink) fails the import.
func (u *unpacker) layer(r io.Reader) error {
	tr := tar.NewReader(r)
	// Paths this layer wrote: an opaque marker hides only lower layers.
	mine := map[string]bool{}
	var opaque []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read layer: %w", err)
		}
		rel, err := cleanPath(h.Name)
		if err != nil {
			return err
		}
		if rel == "" {
			continue // the root itself
		}
		dir, base := filepath.Split(rel)
		dir = strings.TrimSuffix(dir, "/")
		if err := u.checkParents(dir); err != nil {
			return err
		}
		switch {
		case base == opaqueMarker:
			opaque = append(opaque, dir)
			continue
		case strings.HasPrefix(base, whiteoutPrefix):
			victim := filepath.Join(u.root, dir, strings.TrimPrefix(base, whiteoutPrefix))
			if err := removeTree(victim); err != nil {
				return fmt.Errorf("whiteout %s: %w", rel, err)
			}
			continue
		}
		if err := u.entry(tr, h, rel); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		mine[rel] = true
	}
	for _, dir := range opaque {
		if err := u.opaque(dir, mine); err != nil {
			return err
		}
	}
	for p, t := range u.dirTimes {
		os.Chtimes(p, t, t)
	}
	clear(u.dirTimes)
	return nil
}

// cleanPath makes a tar entry name relative to the root, refusing escapes.
func cleanPath(name string) (string, error) {
	p := filepath.Clean("/" + name)
	if strings.Contains(name, "\x00") {
		return "", fmt.Errorf("layer entry %q: NUL in name", name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("layer entry %q leaves the image root", name)
		}
	}
	return strings.TrimPrefix(p, "/"), nil
}

// checkParents refuses a path whose parent directories (inside the root)
// include a symlink, which could point anywhere on the host.
func (u *unpacker) checkParents(dir string) error {
	if dir == "" {
		return nil
	}
	p := u.root
	for _, part := range strings.Split(dir, "/") {
		p = filepath.Join(p, part)
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // created below as a directory
		}
		if err != nil {
			return err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return fmt.Errorf("layer entry under %s goes through a symlink", dir)
		}
	}
	return nil
}

func (u *unpacker) entry(tr *tar.Reader, h *tar.Header, rel string) error {
	path := filepath.Join(u.root, rel)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	mode := uint32(h.Mode & 0o7777)
	if h.Typeflag != tar.TypeDir {
		// A new entry replaces whatever a lower layer had there.
		if fi, err := os.Lstat(path); err == nil && (!fi.IsDir() || h.Typeflag != tar.TypeDir) {
			if err := removeTree(path); err != nil {
				return err
			}
		}
	}
	switch h.Typeflag {
	case tar.TypeDir:
		if fi, err := os.Lstat(path); err == nil && !fi.IsDir() {
			os.Remove(path)
		}
		if err := os.Mkdir(path, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	case tar.TypeReg, tar.TypeRegA:
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, tr)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	case tar.TypeSymlink:
		if err := os.Symlink(h.Linkname, path); err != nil {
			return err
		}
		if err := os.Lchown(path, h.Uid, h.Gid); err != nil {
			return err
		}
		t := h.ModTime
		unix.UtimesNanoAt(unix.AT_FDCWD, path, []unix.Timespec{unix.NsecToTimespec(t.UnixNano()), unix.NsecToTimespec(t.UnixNano())}, unix.AT_SYMLINK_NOFOLLOW)
		return nil
	case tar.TypeLink:
		target, err := cleanPath(h.Linkname)
		if err != nil {
			return err
		}
		if err := u.checkParents(filepath.Dir(target)); err != nil {
			return err
		}
		return os.Link(filepath.Join(u.root, target), path)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		kind := map[byte]uint32{tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK, tar.TypeFifo: unix.S_IFIFO}[h.Typeflag]
		if err := unix.Mknod(path, kind|0o600, int(unix.Mkdev(uint32(h.Devmajor), uint32(h.Devminor)))); err != nil {
			return err
		}
	case tar.TypeXGlobalHeader:
		return nil
	default:
		return nil // sparse and vendor types are not used in images
	}
	// Owner first: chown clears set-id bits, which chmod then restores.
	if err := os.Lchown(path, h.Uid, h.Gid); err != nil {
		return err
	}
	if err := os.Chmod(path, fs.FileMode(mode&0o777)|modeBits(mode)); err != nil {
		return err
	}
	if h.Typeflag == tar.TypeDir {
		if u.dirTimes == nil {
			u.dirTimes = map[string]time.Time{}
		}
		u.dirTimes[path] = h.ModTime
		return nil
	}
	return os.Chtimes(path, h.ModTime, h.ModTime)
}

// modeBits maps the set-id and sticky bits of a tar mode to Go's.
func modeBits(m uint32) fs.FileMode {
	var out fs.FileMode
	if m&0o4000 != 0 {
		out |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		out |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		out |= fs.ModeSticky
	}
	return out
}

// opaque removes from dir everything this layer did not write.
func (u *unpacker) opaque(dir string, mine map[string]bool) error {
	entries, err := os.ReadDir(filepath.Join(u.root, dir))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	for _, e := range entries {
		rel := filepath.Join(dir, e.Name())
		if mine[rel] {
			if e.IsDir() {
				if err := u.opaque(rel, mine); err != nil {
					return err
				}
			}
			continue
		}
		if err := removeTree(filepath.Join(u.root, rel)); err != nil {
			return err
		}
	}
	return nil
}
