package launch

import (
	"errors"
	"fmt"
	"time"

	"microvm.dev/microvm/internal/health"
	"microvm.dev/microvm/internal/vmm"
	"microvm.dev/microvm/internal/vmssh"
)

// AwaitReady waits, within timeout in all, until the guest is ready for
// its workload, the same way for `microvm run` and the daemon: the
// guest's ready line (WaitReady, echoing the console to echo); after a
// resume, its clock set to the host's (it stood still while the VM was
// saved), and after a move only this host's key let in; then, for a VM
// with a healthCheck, the check passing.
func (r *Running) AwaitReady(timeout time.Duration, echo func(string)) (vmm.ReadyResult, error) {
	deadline := time.Now().Add(timeout)
	ready, err := r.WaitReady(timeout, echo)
	if err != nil {
		return ready, err
	}
	// A clone set its clock from its identity disk as it resumed, before
	// its workload ran again; that is seconds late when many resume at
	// once, so it is set again here as a resumed guest's is.
	if m := r.Prepared.Boot.Resume; m != nil {
		if err := r.setGuestClock(); err != nil {
			return ready, fmt.Errorf("resumed, but its clock could not be set: %w", err)
		}
		if m.Moved != nil {
			if err := r.LetOnlyThisHostIn(); err != nil {
				return ready, fmt.Errorf("moved here from %s, but its SSH keys could not be set to this host's: %w", m.Moved.From, err)
			}
		}
	}
	return ready, health.Wait(r.Prepared.env.NetNS, r.Prepared.VM, deadline, r.Exited)
}

// InGuest runs cmd in the guest as root over microvm's own SSH key,
// within timeout.
func (r *Running) InGuest(cmd string, timeout time.Duration) error {
	vm := r.Prepared.VM
	return vmssh.Run(r.Prepared.env.StateDir, vm.Name, vm.Net.Address.String(), r.Prepared.env.NetNS, cmd, timeout)
}

// setGuestClock sets a resumed guest's clock to the host's.
func (r *Running) setGuestClock() error {
	return r.InGuest(fmt.Sprintf("/run/microvm/init clock %d", time.Now().UnixNano()), 10*time.Second)
}

// LetOnlyThisHostIn lets only this host's microvm key and the VM's own
// sshKeys into the guest: after it moved here while it ran (the host it
// left, let in for the move, is not any more), or after such a move did
// not happen (the host it was to go to is not).
func (r *Running) LetOnlyThisHostIn() error {
	own, err := vmssh.ClientPublicKey(r.Prepared.env.StateDir)
	if err != nil {
		return err
	}
	return r.InGuest(vmssh.AuthorizeCommand(true, append([]string{own}, r.Prepared.VM.SSHKeys...)...), 30*time.Second)
}

// LetIn lets the host whose microvm SSH key is key into the guest as
// well, before it moves there running.
func (r *Running) LetIn(key string) error {
	if key == "" {
		return errors.New("the other host did not say its SSH key")
	}
	return r.InGuest(vmssh.AuthorizeCommand(false, key), 30*time.Second)
}
