package launch

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/store"
)

// defaultPath is the PATH a workload runs with unless the image sets one.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// ImageError is a VM's image that cannot run what the VM asks of it.
type ImageError struct {
	// Key is the file's key that asks for it (vms.NAME.image, .command, .user).
	Key string
	Err error
}

func (e *ImageError) Error() string { return e.Key + ": " + e.Err.Error() }

func (e *ImageError) Unwrap() error { return e.Err }

// CheckImage checks that img (at tree) can run vm: its init for
// init: image, else its workload's command and user. Each problem is an
// *ImageError naming the key, the image and the cause.
func CheckImage(vm *config.VM, img store.Image, tree string) error {
	fail := func(key, format string, args ...any) error {
		return &ImageError{Key: "vms." + vm.Name + "." + key, Err: fmt.Errorf(format, args...)}
	}
	if vm.Init == config.InitImage {
		for _, p := range guest.Inits {
			if fi, err := statInTree(tree, p); err == nil && !fi.IsDir() {
				return nil
			}
		}
		return fail("init", "init: image, but image %q has no init (looked for %s)", vm.Image, strings.Join(guest.Inits, ", "))
	}
	w := Workload(vm, img.Config)
	if w == nil {
		return nil
	}
	var errs []error
	prog := w.Command[0]
	if len(w.Command) == 1 && strings.ContainsAny(prog, " \t") {
		prog = "/bin/sh"
	}
	key := "command"
	if len(vm.Command) == 0 {
		key = "image" // the image's own entrypoint and cmd
	}
	pathEnv := defaultPath
	if p, ok := w.Env["PATH"]; ok {
		pathEnv = p
	}
	if _, err := lookPathInTree(tree, prog, pathEnv); err != nil {
		errs = append(errs, fail(key, "image %q cannot run %q: %v", vm.Image, prog, err))
	}
	if w.User != "" {
		if err := checkUser(tree, w.User); err != nil {
			k := "user"
			if vm.User == "" {
				k = "image"
			}
			errs = append(errs, fail(k, "image %q: %v", vm.Image, err))
		}
	}
	return errors.Join(errs...)
}

// lookPathInTree finds prog as exec would inside the image at tree: a path
// as given, a name on pathEnv; it must be an executable file.
func lookPathInTree(tree, prog, pathEnv string) (string, error) {
	var candidates []string
	if strings.Contains(prog, "/") {
		if !path.IsAbs(prog) {
			prog = "/" + prog // relative to the workdir; checked from /
		}
		candidates = []string{prog}
	} else {
		for _, dir := range filepath.SplitList(pathEnv) {
			candidates = append(candidates, path.Join(dir, prog))
		}
	}
	for _, c := range candidates {
		fi, err := statInTree(tree, c)
		if err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return c, nil
		}
	}
	if strings.Contains(prog, "/") {
		return "", fmt.Errorf("%s is not an executable file in the image", prog)
	}
	return "", fmt.Errorf("no executable %s on PATH %s in the image", prog, pathEnv)
}

// checkUser checks a workload's user (name, uid, uid:gid, name:group)
// against the image's /etc/passwd and /etc/group; numeric ids need no
// entry, as with Docker.
func checkUser(tree, user string) error {
	name, group, _ := strings.Cut(user, ":")
	if !numeric(name) && !hasEntry(tree, "/etc/passwd", name) {
		return fmt.Errorf("user %q is not in its /etc/passwd", name)
	}
	if group != "" && !numeric(group) && !hasEntry(tree, "/etc/group", group) {
		return fmt.Errorf("group %q is not in its /etc/group", group)
	}
	return nil
}

func numeric(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

// hasEntry says whether the colon-separated file at p in the tree has a
// line whose first field is name.
func hasEntry(tree, p, name string) bool {
	real, err := resolveInTree(tree, p)
	if err != nil {
		return false
	}
	b, err := os.ReadFile(real)
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f, _, _ := strings.Cut(line, ":"); f == name {
			return true
		}
	}
	return false
}

// statInTree is os.Stat of p inside the image at tree, its symlinks
// resolved against the tree's root, never outside it.
func statInTree(tree, p string) (fs.FileInfo, error) {
	real, err := resolveInTree(tree, p)
	if err != nil {
		return nil, err
	}
	return os.Stat(real)
}

// resolveInTree maps the absolute path p of the image at tree to a host
// path, following symlinks (absolute ones from the tree's root) at most 40
// times.
func resolveInTree(tree, p string) (string, error) {
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

// imageVolumeWarnings names the directories img declares for data that no
// volume of vm covers: they are reset at every boot.
func imageVolumeWarnings(vm *config.VM, img store.Config) []string {
	var out []string
	for _, d := range img.Volumes {
		covered := false
		for _, v := range vm.Volumes {
			if d == v.MountPoint || strings.HasPrefix(d, strings.TrimSuffix(v.MountPoint, "/")+"/") {
				covered = true
			}
		}
		if !covered {
			out = append(out, fmt.Sprintf("vms.%s: image %q declares the volume %s, which no volume of the VM covers: what is written there is lost at every boot (add a volume with mountPoint: %s)", vm.Name, vm.Image, d, d))
		}
	}
	return out
}

// workloadOf is the workload of vm booting img, with the image's stop
// signal; nil for init: image.
func workloadOf(vm *config.VM, img store.Config) *guest.Workload {
	if vm.Init == config.InitImage {
		return nil
	}
	w := Workload(vm, img)
	if w != nil {
		w.StopSignal = img.StopSignal
	}
	return w
}

// ImageProblems checks every VM of cfg whose image the store already has
// (CheckImage), as problems of file; VMs whose image is still to be pulled
// are checked when they start.
func ImageProblems(env Env, cfg *config.Config, file string) config.Problems {
	var out config.Problems
	for _, vm := range cfg.VMs {
		img, err := lookupImage(env, vm)
		if err != nil || img.ID == PendingTree {
			continue
		}
		err = CheckImage(vm, img, store.Open(env.StateDir).TreeDir(img.ID))
		if err == nil {
			continue
		}
		errs := []error{err}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			errs = j.Unwrap()
		}
		for _, e := range errs {
			var ie *ImageError
			if errors.As(e, &ie) {
				out = append(out, config.Problem{File: file, Path: ie.Key, Message: ie.Err.Error()})
			}
		}
	}
	return out
}
