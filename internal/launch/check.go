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

// ImageError is a VM's image that cannot run what the VM asks of it.
type ImageError struct {
	// Path is the file's key that asks for it (vms.NAME.image, .command, .user).
	Path string
	Err  error
}

func (e *ImageError) Error() string { return e.Path + ": " + e.Err.Error() }

// Key is the file's key that asks for it.
func (e *ImageError) Key() string { return e.Path }

// Detail is the cause.
func (e *ImageError) Detail() string { return e.Err.Error() }

func (e *ImageError) Unwrap() error { return e.Err }

// CheckImage checks that img (at tree) can run vm: its init for
// init: image, else its workload's command and user. Each problem is an
// *ImageError naming the key, the image and the cause.
func CheckImage(vm *config.VM, img store.Image, tree string) error {
	fail := func(key, format string, args ...any) error {
		return &ImageError{Path: "vms." + vm.Name + "." + key, Err: fmt.Errorf(format, args...)}
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
	key := "command"
	if len(vm.Command) == 0 {
		key = "image" // the image's own entrypoint and cmd
	}
	pathEnv := guest.DefaultPath
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
// against the image's /etc/passwd and /etc/group, resolved exactly as
// microvm-init will resolve it.
func checkUser(tree, user string) error {
	read := func(p string) []byte {
		if real, err := guest.ResolveIn(tree, p); err == nil {
			b, _ := os.ReadFile(real)
			return b
		}
		return nil
	}
	_, err := guest.LookupUser(user, read("/etc/passwd"), read("/etc/group"))
	return err
}

// statInTree is os.Stat of p inside the image at tree, its symlinks
// resolved against the tree's root, never outside it.
func statInTree(tree, p string) (fs.FileInfo, error) {
	real, err := guest.ResolveIn(tree, p)
	if err != nil {
		return nil, err
	}
	return os.Stat(real)
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

// ImageProblems checks each of vms whose image the store already has
// (CheckImage), as problems of file; VMs whose image is still to be pulled
// are checked when they start.
func ImageProblems(env Env, vms []*config.VM, file string) config.Problems {
	var out config.Problems
	for _, vm := range vms {
		img, err := lookupImage(env, vm)
		if err != nil || img.ID == PendingTree {
			continue
		}
		err = CheckImage(vm, img, store.Open(env.StateDir).TreeDir(img.ID))
		out = append(out, Problems(file, "vms."+vm.Name+".image", err)...)
	}
	return out
}
