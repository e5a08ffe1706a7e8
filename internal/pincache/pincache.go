// Package pincache keeps the read-only disks that VMs moved to this host
// ran on (their pins: a store image, a kernel's module tree), by the
// digest their move checked, so that a later move that brings the same
// bytes links the kept copy instead of receiving it again. It also
// remembers the digest of each such file this host sent, so that it can
// ask a peer whether it has the bytes before sending them.
//
// A digest is the one the move's stream computes on both ends
// (transfer.Stats.SHA256): the same digest means the same size and the
// same bytes at every offset.
package pincache

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"time"
)

// Cache is a directory of kept files named by their digests, and the
// digests this host knows of files it sent or kept.
type Cache struct {
	dir string

	mu   sync.Mutex
	sums map[fileID]string
}

// fileID tells a file's bytes apart without reading them: the same inode
// not changed since (a pin is never written after it is made).
type fileID struct {
	dev, ino    uint64
	size, mtime int64
}

func idOf(fi os.FileInfo) (fileID, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{dev: st.Dev, ino: st.Ino, size: fi.Size(), mtime: fi.ModTime().UnixNano()}, true
}

// New is the cache kept in dir (made when a file is first kept).
func New(dir string) *Cache { return &Cache{dir: dir, sums: map[fileID]string{}} }

var sumRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// ErrBadSum says a digest is not a SHA-256 in hex.
var ErrBadSum = errors.New("not a SHA-256 digest in hex")

// Note records that the file at path, as it is now, has the digest sum
// (this host sent it and the peer checked the digest).
func (c *Cache) Note(path, sum string) {
	fi, err := os.Stat(path)
	if err != nil {
		return
	}
	if id, ok := idOf(fi); ok {
		c.mu.Lock()
		c.sums[id] = sum
		c.mu.Unlock()
	}
}

// Sum is the digest of the file at path when this host knows it: a file
// it sent or kept, not changed since.
func (c *Cache) Sum(path string) (string, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", false
	}
	id, ok := idOf(fi)
	if !ok {
		return "", false
	}
	c.mu.Lock()
	sum, ok := c.sums[id]
	c.mu.Unlock()
	if ok {
		return sum, true
	}
	// A kept file linked into a VM's directory before this daemon
	// started: the cache's entry is the same inode, named by its digest.
	entries, _ := os.ReadDir(c.dir)
	for _, e := range entries {
		if !sumRE.MatchString(e.Name()) {
			continue
		}
		if efi, err := os.Stat(filepath.Join(c.dir, e.Name())); err == nil {
			if eid, ok := idOf(efi); ok && eid == id {
				c.Note(path, e.Name())
				return e.Name(), true
			}
		}
	}
	return "", false
}

// Keep adds the file at path, received with the digest sum, to the cache
// (a hard link: path stays where it is) unless the cache has those bytes
// already, and drops kept files no VM has used for a day.
func (c *Cache) Keep(path, sum string) error {
	if !sumRE.MatchString(sum) {
		return fmt.Errorf("keep %s: %q: %w", path, sum, ErrBadSum)
	}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return err
	}
	c.Prune(24 * time.Hour)
	entry := filepath.Join(c.dir, sum)
	if err := os.Link(path, entry); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("keep %s: %w", path, err)
	}
	c.Note(entry, sum)
	return nil
}

// Link puts the kept file with the digest sum at dst (a hard link; dst
// must not exist) and says whether the cache had it.
func (c *Cache) Link(sum, dst string) (bool, error) {
	if !sumRE.MatchString(sum) {
		return false, fmt.Errorf("%q: %w", sum, ErrBadSum)
	}
	entry := filepath.Join(c.dir, sum)
	if _, err := os.Stat(entry); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err := os.Link(entry, dst); err != nil {
		return false, fmt.Errorf("link the kept %s: %w", sum, err)
	}
	return true, nil
}

// Prune removes the kept files that no VM has used for unused: only the
// cache links them, and their link count last changed before then.
func (c *Cache) Prune(unused time.Duration) error {
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	cutoff := time.Now().Add(-unused)
	for _, e := range entries {
		path := filepath.Join(c.dir, e.Name())
		fi, err := os.Stat(path)
		if err != nil {
			continue
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok || st.Nlink > 1 || time.Unix(st.Ctim.Unix()).After(cutoff) {
			continue
		}
		if err := os.Remove(path); err != nil {
			return err
		}
		if id, ok := idOf(fi); ok {
			c.mu.Lock()
			delete(c.sums, id)
			c.mu.Unlock()
		}
	}
	return nil
}
