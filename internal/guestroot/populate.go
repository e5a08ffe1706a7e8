package guestroot

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// Populate copies the image's content at src (a directory of the store's
// image tree) onto a new, empty volume mounted at dst, as Docker
// initialises a new named volume from the image: owners, modes, times and
// symlinks kept, the volume's root taking the directory's owner and mode.
// A volume with anything on it but lost+found is left alone. It returns
// how many entries it copied.
func Populate(src, dst string) (int, error) {
	fi, err := os.Lstat(src)
	if err != nil || !fi.IsDir() {
		return 0, nil // nothing in the image there
	}
	entries, err := os.ReadDir(dst)
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		if e.Name() != "lost+found" {
			return 0, nil // not empty: never overwritten
		}
	}
	n := 0
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if err := copyEntry(p, target, info, rel == "."); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		n++
		return nil
	})
	return n, err
}

// copyEntry makes target a copy of the entry at p (described by fi);
// root is the volume's own root, which exists already.
func copyEntry(p, target string, fi fs.FileInfo, root bool) error {
	st := fi.Sys().(*syscall.Stat_t)
	switch mode := fi.Mode(); {
	case root:
	case mode.IsDir():
		if err := os.Mkdir(target, 0o700); err != nil {
			return err
		}
	case mode&fs.ModeSymlink != 0:
		link, err := os.Readlink(p)
		if err != nil {
			return err
		}
		if err := os.Symlink(link, target); err != nil {
			return err
		}
		return unix.Lchown(target, int(st.Uid), int(st.Gid))
	case mode.IsRegular():
		if err := copyFile(p, target); err != nil {
			return err
		}
	default:
		if err := unix.Mknod(target, st.Mode, int(st.Rdev)); err != nil {
			return err
		}
	}
	if err := os.Lchown(target, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if err := os.Chmod(target, fi.Mode().Perm()|fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
		return err
	}
	ts := []unix.Timespec{unix.NsecToTimespec(st.Atim.Nano()), unix.NsecToTimespec(st.Mtim.Nano())}
	return unix.UtimesNanoAt(unix.AT_FDCWD, target, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// copyFile copies the regular file src to dst, a new file.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
