package launch

import (
	"errors"
	"fmt"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/secrets"
)

// SecretError is a secret of a VM that this host cannot give it.
type SecretError struct {
	VM    string
	Index int
	// Path is where the secret goes in the guest.
	Path string
	Err  error
}

// Key is the secret's key path in the file, vms.NAME.secrets[I].
func (e *SecretError) Key() string { return fmt.Sprintf("vms.%s.secrets[%d]", e.VM, e.Index) }

func (e *SecretError) Error() string { return fmt.Sprintf("%s (%s): %v", e.Key(), e.Path, e.Err) }

// Detail is the cause, with the secret's path in the guest.
func (e *SecretError) Detail() string { return fmt.Sprintf("%s: %v", e.Path, e.Err) }

func (e *SecretError) Unwrap() error { return e.Err }

// Secrets decrypts vm's secrets with the host's identities. Every secret
// that fails is a *SecretError in the (joined) error, naming it, never its
// content; nothing is written.
func (e Env) Secrets(vm *config.VM) ([]guest.SecretFile, error) {
	var out []guest.SecretFile
	var errs []error
	for i, sec := range vm.Secrets {
		data, err := secrets.Decrypt(sec.Age, e.Identities)
		var mode uint32
		if err == nil {
			mode, err = config.ParseFileMode(sec.Mode)
		}
		if err != nil {
			errs = append(errs, &SecretError{VM: vm.Name, Index: i, Path: sec.Path, Err: err})
			continue
		}
		out = append(out, guest.SecretFile{Path: sec.Path, Mode: mode, Owner: sec.Owner, Data: data})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}
