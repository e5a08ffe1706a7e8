package daemon

import (
	"fmt"
	"strings"
	"time"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/vmssh"
)

// inGuest runs cmd in vm's guest as root over microvm's own SSH key,
// within timeout, reached from the namespace netns.
func inGuest(stateDir, netns string, vm *config.VM, cmd string, timeout time.Duration) error {
	c, err := vmssh.Dial(stateDir, vm.Name, vm.Net.Address.String(), netns, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		return fmt.Errorf("ssh to %s: %w", vm.Name, err)
	}
	defer s.Close()
	done := make(chan error, 1)
	go func() {
		out, err := s.CombinedOutput(cmd)
		if err != nil {
			err = fmt.Errorf("%s in %s: %w: %s", cmd, vm.Name, err, strings.TrimSpace(string(out)))
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		return fmt.Errorf("%s in %s: no answer in %s", cmd, vm.Name, timeout)
	}
}

// setGuestClock sets a resumed guest's clock to the host's: its clock
// stood still while it was saved.
func setGuestClock(stateDir, netns string, vm *config.VM) error {
	return inGuest(stateDir, netns, vm, fmt.Sprintf("/run/microvm/init clock %d", time.Now().UnixNano()), 10*time.Second)
}
