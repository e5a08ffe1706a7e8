package guest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// ResolveIn maps the absolute path p of the root filesystem at tree to a
// path from here, following its symlinks as they resolve inside that root
// (absolute ones from its top, never above it), at most 40 times. The host
// checks images with it; microvm-init reads an image's init with it.
func ResolveIn(tree, p string) (string, error) {
	return resolveIn(tree, p, false)
}

// ResolveInToCreate is ResolveIn for a path to be created: from the first
// component that does not exist on, the rest is taken as it is (microvm-init
// binds the kernel's module tree at /lib/modules/RELEASE with it, through
// an image's merged-/usr /lib link, where the directory may not exist).
func ResolveInToCreate(tree, p string) (string, error) {
	return resolveIn(tree, p, true)
}

func resolveIn(tree, p string, missingOK bool) (string, error) {
	parts := strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/")
	cur := "/"
	for hops := 0; len(parts) > 0; {
		part := parts[0]
		parts = parts[1:]
		if part == "" || part == "." {
			continue
		}
		next := path.Join(cur, part)
		fi, err := os.Lstat(filepath.Join(tree, next))
		if missingOK && errors.Is(err, fs.ErrNotExist) {
			return filepath.Join(tree, next, path.Join(append([]string{"/"}, parts...)...)), nil
		}
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		if hops++; hops > 40 {
			return "", fmt.Errorf("%s: too many links", p)
		}
		target, err := os.Readlink(filepath.Join(tree, next))
		if err != nil {
			return "", err
		}
		if !path.IsAbs(target) {
			target = path.Join(cur, target)
		}
		parts = append(strings.Split(strings.Trim(path.Clean(target), "/"), "/"), parts...)
		cur = "/"
	}
	return filepath.Join(tree, cur), nil
}
