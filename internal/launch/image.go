package launch

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/store"
)

// PendingTree is the placeholder tree of an image not in the store yet.
const PendingTree = "<pending>"

// ResolveImage returns the store image vm boots from. An OCI reference
// is pulled when pull is set and the VM's pull policy asks for it
// (missing: when the store lacks it; always: every time; never: not).
// Cancelling ctx cancels a pull.
func ResolveImage(ctx context.Context, env Env, vm *config.VM, pull bool) (store.Image, error) {
	st := store.Open(env.StateDir)
	ref := strings.ContainsAny(vm.Image, "/:@")
	policy := vm.Supervision.PullPolicy
	if ref && pull && policy == config.PullAlways {
		return pullImage(ctx, env, st, vm)
	}
	img, err := st.Get(vm.Image)
	switch {
	case err == nil:
		return img, nil
	case !errors.Is(err, store.ErrNotFound):
		return store.Image{}, fmt.Errorf("vms.%s.image: %w", vm.Name, err)
	case !ref:
		return store.Image{}, notFound("vms.%s.image: image %q is not in the store (import it: microvm image import %s DIR|TARBALL; the base image: scripts/build-base-image.sh %s)",
			vm.Name, vm.Image, vm.Image, filepath.Join(st.Trees, vm.Image))
	case policy == config.PullNever:
		return store.Image{}, notFound("vms.%s.image: %s has not been pulled and pullPolicy is never (microvm image pull %s)", vm.Name, vm.Image, vm.Image)
	case !pull:
		return store.Image{}, notFound("vms.%s.image: %s has not been pulled yet (microvm image pull %s)", vm.Name, vm.Image, vm.Image)
	}
	return pullImage(ctx, env, st, vm)
}

// lookupImage is the image vm boots from if the store has it, else the
// placeholder PendingTree (an image Prepare would pull or report missing).
func lookupImage(env Env, vm *config.VM) (store.Image, error) {
	img, err := ResolveImage(context.Background(), env, vm, false)
	if errors.Is(err, store.ErrNotFound) {
		return store.Image{ID: PendingTree}, nil
	}
	return img, err
}

// notFound is an error saying an image is not in the store; it matches
// store.ErrNotFound.
func notFound(format string, args ...any) error {
	return notFoundError{fmt.Sprintf(format, args...)}
}

type notFoundError struct{ msg string }

func (e notFoundError) Error() string { return e.msg }
func (e notFoundError) Unwrap() error { return store.ErrNotFound }

func pullImage(ctx context.Context, env Env, st *store.Store, vm *config.VM) (store.Image, error) {
	img, err := st.Pull(ctx, vm.Image, store.Options{Arch: goarch(env.arch())})
	if err != nil {
		return store.Image{}, fmt.Errorf("vms.%s.image: %w", vm.Name, err)
	}
	return img, nil
}

// Workload is what runs in vm with image's config, as a container
// runtime takes it: the VM's command, env, workdir and user where it sets
// them, else the image's entrypoint and cmd, environment (the VM's
// variables win), working directory and user, and the image's stop
// signal. The VM's args follow its command, or the image's entrypoint in
// place of the image's cmd. A command that is a single string with spaces runs through
// /bin/sh -c. It is nil for init: image and when neither gives a command.
func Workload(vm *config.VM, img store.Config) *guest.Workload {
	if vm.Init == config.InitImage {
		return nil
	}
	cmd := append([]string(nil), vm.Command...)
	switch {
	case len(cmd) > 0:
		cmd = append(cmd, vm.Args...)
	case len(vm.Args) > 0:
		cmd = append(append(cmd, img.Entrypoint...), vm.Args...)
	default:
		cmd = append(append(cmd, img.Entrypoint...), img.Cmd...)
	}
	if len(cmd) == 0 {
		return nil
	}
	if len(cmd) == 1 && len(vm.Args) == 0 && strings.ContainsAny(cmd[0], " \t") {
		cmd = []string{"/bin/sh", "-c", cmd[0]}
	}
	var env map[string]string
	if len(img.Env) > 0 || len(vm.Env) > 0 {
		env = map[string]string{}
		for _, kv := range img.Env {
			if k, v, ok := strings.Cut(kv, "="); ok {
				env[k] = v
			}
		}
		for k, v := range vm.Env {
			env[k] = v
		}
	}
	w := &guest.Workload{Command: cmd, Env: env, Workdir: vm.Workdir, User: vm.User, StopSignal: img.StopSignal}
	if w.Workdir == "" {
		w.Workdir = img.WorkingDir
	}
	if w.User == "" {
		w.User = img.User
	}
	return w
}
