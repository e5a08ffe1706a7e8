package store

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// OCI whiteout markers: ".wh.<name>" deletes <name> from the layers below;
// ".wh..wh..opq" in a directory hides everything below in that directory.
const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
)

// Files of at most bufferedFile bytes are read into memory and written by
// a worker; larger ones are written in order by the reader. queueDepth
// bounds each worker's queue, so at most workers × queueDepth ×
// bufferedFile bytes wait in memory.
const (
	bufferedFile = 1 << 20
	queueDepth   = 8
)

// unpacker applies layers, in order, to one root directory.
//
// With workers, creating new regular files is spread over them by parent
// directory: the kernel creates files in one directory one at a time (the
// directory's lock), but in different directories at once, and creating a
// file is the costliest step of an unpack on some filesystems. Everything
// that removes, replaces or links (whiteouts, opaque directories, an entry
// over an existing path, symlinks, hard links, devices) first waits for
// the workers and then runs in order, so the outcome is the same as
// unpacking one entry after another, and no symlink ever appears while a
// worker is writing (checkParents stays sound).
type unpacker struct {
	root string
	// dirTimes are set when the unpack is finished (writing into a
	// directory changes its time); a later layer's time wins.
	dirTimes map[string]time.Time

	queues  []chan func() error
	wg      sync.WaitGroup // the workers
	pending sync.WaitGroup // queued work
	// written holds the paths queued since the workers were last drained.
	written map[string]bool
	// buffers recycles queued files' contents (*[]byte of bufferedFile
	// capacity) once written.
	buffers sync.Pool
	mu      sync.Mutex
	err     error // the first worker error
}

// newUnpacker returns an unpacker for root with the given number of file
// workers (1 or less: everything in order on the caller's goroutine).
// close must be called once the last layer is applied.
func newUnpacker(root string, workers int) *unpacker {
	u := &unpacker{root: root, dirTimes: map[string]time.Time{}, written: map[string]bool{}}
	if workers <= 1 {
		return u
	}
	for range workers {
		q := make(chan func() error, queueDepth)
		u.queues = append(u.queues, q)
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			for work := range q {
				if u.failed() == nil {
					if err := work(); err != nil {
						u.fail(err)
					}
				}
				u.pending.Done()
			}
		}()
	}
	return u
}

func (u *unpacker) fail(err error) {
	u.mu.Lock()
	if u.err == nil {
		u.err = err
	}
	u.mu.Unlock()
}

func (u *unpacker) failed() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.err
}

// queue hands work on rel to the worker for rel's directory, so work in
// one directory stays in order.
func (u *unpacker) queue(rel string, work func() error) {
	h := fnv.New32a()
	h.Write([]byte(filepath.Dir(rel)))
	u.written[rel] = true
	u.pending.Add(1)
	u.queues[h.Sum32()%uint32(len(u.queues))] <- work
}

// drain waits until all queued work is done and returns the first error.
func (u *unpacker) drain() error {
	u.pending.Wait()
	clear(u.written)
	return u.failed()
}

// close waits for the workers, stops them and sets the directories' times.
func (u *unpacker) close() error {
	err := u.drain()
	for _, q := range u.queues {
		close(q)
	}
	u.queues = nil
	u.wg.Wait()
	if err != nil {
		return err
	}
	for p, t := range u.dirTimes {
		os.Chtimes(p, t, t)
	}
	clear(u.dirTimes)
	return nil
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
			if err := u.drain(); err != nil {
				return err
			}
			victim := filepath.Join(u.root, dir, strings.TrimPrefix(base, whiteoutPrefix))
			if err := removeTree(victim); err != nil {
				return fmt.Errorf("whiteout %s: %w", rel, err)
			}
			continue
		}
		if err := u.entry(tr, h, rel); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		if err := u.failed(); err != nil {
			return err
		}
		mine[rel] = true
	}
	if len(opaque) > 0 {
		if err := u.drain(); err != nil {
			return err
		}
	}
	for _, dir := range opaque {
		if err := u.opaque(dir, mine); err != nil {
			return err
		}
	}
	return u.failed()
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
	regular := h.Typeflag == tar.TypeReg || h.Typeflag == tar.TypeRegA
	if u.queues != nil {
		_, statErr := os.Lstat(path)
		fresh := !u.written[rel] && errors.Is(statErr, fs.ErrNotExist)
		switch {
		case regular && fresh && h.Size <= bufferedFile:
			bp, _ := u.buffers.Get().(*[]byte)
			if bp == nil {
				b := make([]byte, bufferedFile)
				bp = &b
			}
			data := (*bp)[:h.Size]
			if _, err := io.ReadFull(tr, data); err != nil {
				u.buffers.Put(bp)
				return err
			}
			u.queue(rel, func() error {
				defer u.buffers.Put(bp)
				err := os.MkdirAll(filepath.Dir(path), 0o755)
				if err == nil {
					err = writeFile(path, h, bytes.NewReader(data))
				}
				if err != nil {
					return fmt.Errorf("%s: %w", rel, err)
				}
				return nil
			})
			return nil
		case regular && fresh:
			// A large new file: written here, in order, nothing to replace.
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return err
			}
			return writeFile(path, h, tr)
		case h.Typeflag == tar.TypeDir && !u.written[rel]:
			// New directories never disturb queued work.
		default:
			if err := u.drain(); err != nil {
				return err
			}
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
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
		return writeFile(path, h, tr)
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
	if err := setAttrs(path, h); err != nil {
		return err
	}
	if h.Typeflag == tar.TypeDir {
		u.dirTimes[path] = h.ModTime
		return nil
	}
	return os.Chtimes(path, h.ModTime, h.ModTime)
}

// writeFile creates the regular file path (which must not exist yet, in a
// directory that does) with the content of r and h's owner, mode and time.
func writeFile(path string, h *tar.Header, r io.Reader) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := setAttrs(path, h); err != nil {
		return err
	}
	return os.Chtimes(path, h.ModTime, h.ModTime)
}

// setAttrs gives path h's owner and mode. Owner first: chown clears
// set-id bits, which chmod then restores.
func setAttrs(path string, h *tar.Header) error {
	if err := os.Lchown(path, h.Uid, h.Gid); err != nil {
		return err
	}
	mode := uint32(h.Mode & 0o7777)
	return os.Chmod(path, fs.FileMode(mode&0o777)|modeBits(mode))
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
