package launch

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/imagesig"
	"microvm.dev/microvm/internal/store"
)

// PendingTree is the placeholder tree of an image not in the store yet.
const PendingTree = "<pending>"

// ResolveImage returns the store image vm boots from. An OCI reference
// is pulled when pull is set and the VM's pull policy asks for it
// (missing: when the store lacks it; always: every time; never: not).
// With pull set (a start) the VM's image policy is enforced too: a pull is
// verified, a stored image must have been. Cancelling ctx cancels a pull.
func ResolveImage(ctx context.Context, env Env, vm *config.VM, pull bool) (store.Image, error) {
	st := store.Open(env.StateDir)
	ref := config.IsReference(vm.Image)
	policy := vm.Supervision.PullPolicy
	if ref && pull && policy == config.PullAlways {
		return pullImage(ctx, env, st, vm)
	}
	img, err := st.Get(vm.Image)
	switch {
	case err == nil && !pull:
		// Not a start (plan, render, adoption): the image policy is
		// checked when the VM starts, so a policy change stops nothing.
		return img, nil
	case err == nil:
		perr := policyAllows(env, vm, img, ref)
		if perr == nil || !ref || policy == config.PullNever {
			return img, perr
		}
		// Pulled before the policy asked for signatures (or by other
		// keys): pulled again, verified this time.
		return pullImage(ctx, env, st, vm)
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

// imagePolicy is one policy a VM's image must satisfy, and what to call
// it in an error.
type imagePolicy struct {
	config.ImagePolicy
	what string
}

// imagePolicies are the policies vm's image must satisfy: its own
// imagePolicy and the host's --image-key, those that check anything.
func imagePolicies(env Env, vm *config.VM) []imagePolicy {
	var out []imagePolicy
	if p := vm.Supervision.ImagePolicy; p.Enforced() {
		out = append(out, imagePolicy{p, "the VM's imagePolicy"})
	}
	if p := env.HostImagePolicy; p.Enforced() {
		out = append(out, imagePolicy{p, "the host's --image-key"})
	}
	return out
}

// policyAllows checks a stored image against vm's image policies: one
// from a registry must have been verified by one of each policy's keys
// or identities when pulled, a local one imported with --trust or allowed by
// allowLocal.
func policyAllows(env Env, vm *config.VM, img store.Image, ref bool) error {
	for _, pol := range imagePolicies(env, vm) {
		if !ref {
			if img.Trusted || pol.AllowLocal {
				continue
			}
			return fmt.Errorf("vms.%s.image: %q is a local image and %s asks for signatures: import it with microvm image import --trust, or set imagePolicy.allowLocal", vm.Name, vm.Image, pol.what)
		}
		v, err := imagesig.New(pol.ImagePolicy)
		if err != nil {
			return fmt.Errorf("vms.%s.%w", vm.Name, err)
		}
		if !v.Allows(img.Signers) {
			return fmt.Errorf("vms.%s.image: %s in the store was not verified against %s's keys or identities when pulled (microvm image pull --key KEY %s)", vm.Name, vm.Image, pol.what, vm.Image)
		}
	}
	return nil
}

// Verification is a store pull's signature check against every one of
// pols: the IDs of the keys or certificate identities that signed the
// image.
func Verification(pols ...config.ImagePolicy) (store.VerifyFunc, error) {
	var vs []*imagesig.Verifier
	for _, pol := range pols {
		v, err := imagesig.New(pol)
		if err != nil {
			return nil, err
		}
		vs = append(vs, v)
	}
	return func(ctx context.Context, repo name.Repository, digests []v1.Hash, opts []remote.Option) ([]string, error) {
		var ids []string
		for _, v := range vs {
			signer, err := v.Verify(ctx, repo, digests, opts...)
			if err != nil {
				return nil, err
			}
			if !slices.Contains(ids, signer.ID) {
				ids = append(ids, signer.ID)
			}
		}
		return ids, nil
	}, nil
}

// TagDigest is the image vm's tag names in its registry now
// (repo@sha256:…), asked with the credentials a pull of it would use.
func TagDigest(ctx context.Context, env Env, vm *config.VM) (string, error) {
	d, err := store.Resolve(ctx, vm.Image, pullOptions(env, vm))
	if err != nil {
		return "", fmt.Errorf("vms.%s.image: %w", vm.Name, err)
	}
	return d, nil
}

// pullOptions are the registry options of a pull of vm's image: the
// host's architecture and the VM's registry logins.
func pullOptions(env Env, vm *config.VM) store.Options {
	return store.Options{Arch: goarch(env.arch()), Keychain: RegistryLogins(vm.Supervision.Registries, env.Identities)}
}

func pullImage(ctx context.Context, env Env, st *store.Store, vm *config.VM) (store.Image, error) {
	o := pullOptions(env, vm)
	if pols := imagePolicies(env, vm); len(pols) > 0 {
		var ps []config.ImagePolicy
		for _, p := range pols {
			ps = append(ps, p.ImagePolicy)
		}
		verify, err := Verification(ps...)
		if err != nil {
			return store.Image{}, fmt.Errorf("vms.%s.%w", vm.Name, err)
		}
		o.Verify = verify
	}
	img, err := st.Pull(ctx, vm.Image, o)
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
