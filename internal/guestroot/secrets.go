package guestroot

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"microvm.dev/microvm/internal/guest"
)

// WriteSecrets writes the VM's decrypted secrets into the root, whose
// writable layer is memory. Missing parent directories are made (0755,
// root's); a parent that is a symlink in the image is refused, since it
// could lead onto a data volume, and the file itself is never followed.
func (r Root) WriteSecrets(files []guest.SecretFile) error {
	for _, f := range files {
		if err := r.writeSecret(f); err != nil {
			return fmt.Errorf("secret %s: %w", f.Path, err)
		}
	}
	return nil
}

func (r Root) writeSecret(f guest.SecretFile) error {
	uid, gid := uint32(0), uint32(0)
	if f.Owner != "" && f.Owner != "root" && f.Owner != "0" {
		u, err := r.LookupUser(f.Owner)
		if err != nil {
			return err
		}
		uid, gid = u.UID, u.GID
	}
	dir := r.Path("/") // absolute also for the running guest's own root, ""
	parts := strings.Split(strings.TrimPrefix(filepath.Dir(f.Path), "/"), "/")
	for _, part := range parts {
		if part == "" {
			continue
		}
		dir = filepath.Join(dir, part)
		fi, err := os.Lstat(dir)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := os.Mkdir(dir, 0o755); err != nil {
				return err
			}
		case err != nil:
			return err
		case fi.Mode()&fs.ModeSymlink != 0:
			return fmt.Errorf("%s is a symlink in the image", strings.TrimPrefix(dir, string(r)))
		case !fi.IsDir():
			return fmt.Errorf("%s is not a directory", strings.TrimPrefix(dir, string(r)))
		}
	}
	fd, err := unix.Open(r.Path(f.Path), unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	file := os.NewFile(uintptr(fd), f.Path)
	defer file.Close()
	if err := file.Chown(int(uid), int(gid)); err != nil {
		return err
	}
	if err := file.Chmod(fs.FileMode(f.Mode)); err != nil {
		return err
	}
	if _, err := file.Write(f.Data); err != nil {
		return err
	}
	return file.Close()
}
