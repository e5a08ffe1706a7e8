// Package storeimage turns a store image tree into a read-only ext4 disk
// image for hypervisors that cannot share directories (Firecracker). The
// disk is built once per tree content and cached under a key derived from
// the tree, so a deploy never rebuilds it: VMs on the same image share one
// file, opened read-only.
package storeimage

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Key identifies the tree's content: a hash over every entry's path, type,
// mode, owner, size, modification time and link target. Store trees are
// immutable once imported (read-only, written by temp dir and rename), so
// a change to any file changes its size or time and therefore the key.
func Key(tree string) (string, error) {
	h := sha256.New()
	err := filepath.WalkDir(tree, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(tree, p)
		var uid, gid uint32
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			uid, gid = st.Uid, st.Gid
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			link, _ = os.Readlink(p)
		}
		fmt.Fprintf(h, "%q %o %d:%d %d %d %q\n", rel, fi.Mode(), uid, gid, fi.Size(), fi.ModTime().UnixNano(), link)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("store image %s: %w", tree, err)
	}
	return hex.EncodeToString(h.Sum(nil))[:32], nil
}

// Path is where the disk image of tree is cached under cacheDir.
func Path(cacheDir, tree string) (string, error) {
	k, err := Key(tree)
	if err != nil {
		return "", err
	}
	return filepath.Join(cacheDir, k+".ext4"), nil
}

// Ensure builds the disk image of tree at path (from Path) unless it is
// there already; built says whether it was made now. Concurrent callers
// for the same tree build it once: the build holds a lock on the cache
// directory and writes a temporary file renamed into place.
func Ensure(path, tree string) (built bool, err error) {
	return EnsureLabeled(path, tree, "microvm-store")
}

// EnsureLabeled is Ensure with the file system's label given.
func EnsureLabeled(path, tree, label string) (built bool, err error) {
	if _, err := os.Stat(path); err == nil {
		return false, nil
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return false, err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return false, fmt.Errorf("lock %s: %w", dir, err)
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN)
	if _, err := os.Stat(path); err == nil {
		return false, nil // built by another caller meanwhile
	}
	size, inodes, err := measure(tree)
	if err != nil {
		return false, err
	}
	tmp := path + ".tmp"
	os.Remove(tmp)
	// Room for metadata and directories on top of the data; retried larger
	// if mkfs runs out of space.
	bytes := size + size/5 + inodes*4096 + 16<<20
	for attempt := 0; ; attempt++ {
		err = mkfs(tmp, tree, label, bytes, inodes)
		if err == nil || attempt == 3 || !errors.Is(err, errTooSmall) {
			break
		}
		bytes *= 2
	}
	if err != nil {
		os.Remove(tmp)
		return false, err
	}
	if err := os.Chmod(tmp, 0o444); err != nil {
		return false, err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return false, err
	}
	return true, nil
}

// measure sums the tree's file sizes (rounded to 4 KiB blocks) and counts its entries.
func measure(tree string) (size, entries int64, err error) {
	err = filepath.WalkDir(tree, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		entries++
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			size += (fi.Size() + 4095) &^ 4095
		}
		return nil
	})
	return size, entries, err
}

// errTooSmall says the image was too small for the tree (mkfs.ext4 ran
// out of space): a larger one may do.
var errTooSmall = errors.New("the image is too small for the tree")

func mkfs(img, tree, label string, bytes, inodes int64) error {
	bin, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		return fmt.Errorf("store disk image: mkfs.ext4 is missing (install e2fsprogs)")
	}
	os.Remove(img)
	f, err := os.Create(img)
	if err != nil {
		return err
	}
	if err := f.Truncate((bytes + 4095) &^ 4095); err != nil {
		f.Close()
		return err
	}
	f.Close()
	// No journal (the disk is read-only), no reserved blocks, enough inodes;
	// -d copies the tree with its modes and owners.
	out, err := exec.Command(bin, "-q", "-F", "-L", label, "-m", "0", "-O", "^has_journal",
		"-N", fmt.Sprint(inodes+1024), "-d", tree, img).CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if strings.Contains(msg, "space") || strings.Contains(msg, "Could not allocate block") {
			return fmt.Errorf("store disk image of %s: %w: mkfs.ext4: %v: %s", tree, errTooSmall, err, msg)
		}
		return fmt.Errorf("store disk image of %s: mkfs.ext4: %v: %s", tree, err, msg)
	}
	return nil
}
