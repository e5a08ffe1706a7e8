package main

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/vmm"
	"microvm.dev/microvm/internal/vmssh"
)

// vmAddress asks the daemon for a running VM's address and the network
// namespace it is reached in: --netns when given, else the daemon's own.
func (a *app) vmAddress(name string) (addr, netns string, err error) {
	st, err := a.runningVM(name)
	if err != nil {
		return "", "", err
	}
	netns = a.netns
	if netns == "" {
		netns = st.Netns
	}
	return st.Spec.Net.Address.String(), netns, nil
}

// runningVM asks the daemon for a VM that must be running.
func (a *app) runningVM(name string) (apitypes.VMStatus, error) {
	var st apitypes.VMStatus
	if err := a.client().Do("GET", "/v1/vms/"+url.PathEscape(name), nil, &st); err != nil {
		return st, err
	}
	if st.State != apitypes.Running || st.Spec == nil {
		return st, fmt.Errorf("%s is %s, not running", name, st.State)
	}
	return st, nil
}

// exitCodeError carries a remote command's exit status out of the CLI.
type exitCodeError struct{ code int }

func (e exitCodeError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func (a *app) execCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "exec VM -- CMD [ARG…]",
		Short: "Run a command in a VM over SSH; its exit status becomes microvm's",
		Long: `Exec runs a command in the VM as root over SSH with microvm's own key,
pinning the VM's host key, with the command's output on microvm's output and
its exit status as microvm's.`,
		Example: "  microvm exec vm1 -- uname -a\n  microvm exec vm1 -- sh -c 'df -h /mnt/storage'",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 {
				return usagef("exec takes a VM and a command: microvm exec VM -- CMD")
			}
			return nil
		},
		RunE: func(_ *cobra.Command, args []string) error {
			addr, netns, err := a.vmAddress(args[0])
			if err != nil {
				return err
			}
			s, done, err := vmssh.Session(a.stateDir, args[0], addr, netns, 10*time.Second)
			if err != nil {
				return err
			}
			defer done()
			s.Stdin, s.Stdout, s.Stderr = os.Stdin, a.stdout, a.stderr
			err = s.Run(vmm.ShellQuote(args[1:]))
			var ee *ssh.ExitError
			if errors.As(err, &ee) {
				return exitCodeError{ee.ExitStatus()}
			}
			return err
		},
	}
}

func (a *app) sshCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "ssh VM [SSH ARGS…]",
		Short: "Open an interactive SSH session to a VM (with the system ssh client)",
		Long: `Ssh runs the system ssh client to the VM as root with microvm's key and a
known_hosts file holding the VM's pinned host key. Arguments after the VM go
to ssh after the destination: options, or a command to run.`,
		Example: "  microvm ssh vm1\n  microvm ssh vm1 -- -L 8080:localhost:8080\n  microvm ssh vm1 -- uptime",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 {
				return usagef("ssh takes a VM")
			}
			return nil
		},
		RunE: func(_ *cobra.Command, args []string) error {
			addr, netns, err := a.vmAddress(args[0])
			if err != nil {
				return err
			}
			known, err := vmssh.KnownHosts(a.stateDir, args[0], addr)
			if err != nil {
				return err
			}
			bin, err := exec.LookPath("ssh")
			if err != nil {
				return fmt.Errorf("the ssh client is not installed (apt-get install openssh-client); microvm exec works without it")
			}
			argv := []string{bin, "-i", vmssh.ClientKeyPath(a.stateDir), "-o", "UserKnownHostsFile=" + known,
				"-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes"}
			argv = append(append(argv, "root@"+addr), args[1:]...)
			if netns != "" {
				nsenter, err := exec.LookPath("nsenter")
				if err != nil {
					return err
				}
				argv = append([]string{nsenter, "--net=" + netns, "--"}, argv...)
			}
			return syscall.Exec(argv[0], argv, os.Environ())
		},
	}
}
