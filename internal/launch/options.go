package launch

import (
	"errors"
	"fmt"
	"os"

	"microvm.dev/microvm/internal/cgroup"
	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/secrets"
	"microvm.dev/microvm/internal/vmm"
	"microvm.dev/microvm/internal/vmmuser"
)

// Options are the settings a launch environment is made from: the launch
// flags that `microvm run`, `daemon`, `net apply`, `verify` and `render
// runner` share, so each builds its Env the same way (NewEnv).
type Options struct {
	// StateDir, RunDir and NetNS are the Env's.
	StateDir, RunDir, NetNS string
	// KernelCache, InitDir, Arch and Share are the Env's (--kernel-cache,
	// --init-dir, --arch, --share).
	KernelCache, InitDir, Arch, Share string
	// VMMUser is the user hypervisors run as (--vmm-user; "" or "root":
	// root). VMMUserNamed says it was named on the command line: a missing
	// user is then an error, else a warning and hypervisors run as root.
	VMMUser      string
	VMMUserNamed bool
	// VMMIDs is --vmm-ids: START:COUNT, auto or off.
	VMMIDs string
	// VMMConfine is --vmm-confine: auto or off.
	VMMConfine string
	// Identities are the files of the identities that decrypt secrets
	// (--age-identity); none: the host's own.
	Identities []string
	// ImageKeys are --image-key: cosign public key files every VM's image
	// must be signed by, whatever the file's imagePolicy says.
	ImageKeys []string
	// NoSecrets says the caller starts no VM (`net apply`): no identity is
	// read.
	NoSecrets bool
	// APIGroup is the group of the daemon's API socket, which the
	// hypervisors' user must not be in.
	APIGroup string
}

// ErrOption marks (wrapped) an error that is the fault of an option's
// value: a command line reports it as a usage error.
var ErrOption = errors.New("bad option")

// optionError is an Options mistake, naming its flag.
type optionError struct{ err error }

func (e optionError) Error() string            { return e.err.Error() }
func (e optionError) Unwrap() error            { return e.err }
func (optionError) Is(target error) bool       { return target == ErrOption }
func optionf(format string, args ...any) error { return optionError{fmt.Errorf(format, args...)} }

// NewEnv is the launch environment o describes, and what the caller
// should warn of. Without usable cgroups VMs without limits still run (one
// with limits is refused when it starts); hypervisors run as o.VMMUser,
// each with an id of its own from its range and confined to a root of its
// own, as o says.
func NewEnv(o Options) (Env, []string, error) {
	env := Env{StateDir: o.StateDir, RunDir: o.RunDir, KernelCache: o.KernelCache, InitDir: o.InitDir, NetNS: o.NetNS, Arch: o.Arch, Share: o.Share}
	var warnings []string
	if cg, err := cgroup.Detect(cgroup.DefaultRoot); err == nil {
		env.Cgroups = cg
	}
	u, err := vmmuser.Lookup(o.VMMUser, o.APIGroup)
	switch {
	case errors.Is(err, vmmuser.ErrNoUser) && !o.VMMUserNamed:
		warnings = append(warnings, fmt.Sprintf("hypervisors run as root: %v", err))
	case err != nil:
		return env, nil, optionError{fmt.Errorf("--vmm-user: %w", err)}
	}
	if u != nil {
		if u.IDs, err = VMMIDs(o.VMMIDs, u.Name); err != nil {
			return env, nil, err
		}
	}
	env.VMMUser = u
	switch o.VMMConfine {
	case "auto", "":
		if u != nil {
			if env.Self, err = os.Executable(); err != nil {
				return env, nil, fmt.Errorf("--vmm-confine: the microvm binary: %w", err)
			}
		}
	case "off":
	default:
		return env, nil, optionf("--vmm-confine must be auto or off, not %q", o.VMMConfine)
	}
	if vmm.HardwareKVM() && u != nil && !u.CanOpen("/dev/kvm") {
		warnings = append(warnings, fmt.Sprintf("hypervisors run as %s, who cannot open /dev/kvm: VMs are emulated (TCG). Give /dev/kvm a group (chgrp kvm /dev/kvm && chmod 660 /dev/kvm), or run hypervisors as root with --vmm-user root", u.Name))
	}
	for _, k := range o.ImageKeys {
		data, err := os.ReadFile(k)
		if err == nil {
			_, err = config.ParsePublicKey(data)
		}
		if err != nil {
			return env, nil, optionf("--image-key %s: %w", k, err)
		}
		env.HostImagePolicy.Keys = append(env.HostImagePolicy.Keys, string(data))
	}
	if o.NoSecrets {
		return env, warnings, nil
	}
	switch env.Identities, err = secrets.HostIdentities(o.Identities); {
	case err != nil && len(o.Identities) > 0:
		return env, nil, optionError{fmt.Errorf("--age-identity: %w", err)}
	case err != nil:
		warnings = append(warnings, fmt.Sprintf("VMs' secrets cannot be decrypted: %v", err))
	}
	return env, warnings, nil
}

// VMMIDs is the id range --vmm-ids (flag) says for user's hypervisors
// (nil: off): auto is user's range in /etc/subuid and /etc/subgid, when
// it has one.
func VMMIDs(flag, user string) (*vmmuser.Range, error) {
	switch flag {
	case "off":
		return nil, nil
	case "auto", "":
		r, ok, err := vmmuser.Subordinate(user, "/etc/subuid", "/etc/subgid")
		if err != nil || !ok {
			return nil, err
		}
		return &r, nil
	}
	r, err := vmmuser.ParseRange(flag)
	if err != nil {
		return nil, optionError{fmt.Errorf("--vmm-ids: %w", err)}
	}
	return &r, nil
}
