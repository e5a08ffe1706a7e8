// Package vmssh reaches a VM over SSH the way microvm's verbs do: with
// microvm's own client key, pinning the VM's host key kept in the state
// directory, from inside a network namespace when one is given.
package vmssh

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/crypto/ssh"

	"microvm.dev/microvm/internal/sshkey"
	"microvm.dev/microvm/internal/state"
)

// ClientKeyPath is microvm's own SSH client key, authorized in every VM.
func ClientKeyPath(stateDir string) string { return filepath.Join(stateDir, "ssh", "id_ed25519") }

// HostKeyPath is the VM's SSH host key.
func HostKeyPath(stateDir, vm string) string {
	return filepath.Join(state.Dir{Root: stateDir}.VMDir(vm), "ssh_host_ed25519_key")
}

// HostPublicKey reads the VM's host key and returns its public half.
func HostPublicKey(stateDir, vm string) (ssh.PublicKey, error) {
	b, err := os.ReadFile(HostKeyPath(stateDir, vm))
	if err != nil {
		return nil, fmt.Errorf("the host key of %s: %w (has it ever been started?)", vm, err)
	}
	s, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("the host key of %s is corrupt: %w", vm, err)
	}
	return s.PublicKey(), nil
}

// KnownHosts writes a known_hosts file for the VM's address and returns its path.
func KnownHosts(stateDir, vm, addr string) (string, error) {
	pk, err := HostPublicKey(stateDir, vm)
	if err != nil {
		return "", err
	}
	p := filepath.Join(state.Dir{Root: stateDir}.VMDir(vm), "known_hosts")
	line := addr + " " + string(ssh.MarshalAuthorizedKey(pk))
	return p, state.WriteFile(p, []byte(line), 0o600)
}

// ClientPublicKey is microvm's own SSH client key (made on first use) in
// authorized_keys format: what another host authorizes in a guest that
// moves to this one.
func ClientPublicKey(stateDir string) (string, error) {
	signer, _, err := sshkey.Ensure(ClientKeyPath(stateDir), "microvm")
	if err != nil {
		return "", fmt.Errorf("microvm's SSH key: %w", err)
	}
	return strings.TrimSpace(sshkey.AuthorizedLine(signer)), nil
}

// AuthorizeCommand is the command, run in a guest, that makes keys the
// ones its SSH server lets in (only, or in addition to those it has).
func AuthorizeCommand(only bool, keys ...string) string {
	cmd := "/run/microvm/init authorize"
	if only {
		cmd += " --only"
	}
	for _, k := range keys {
		cmd += " '" + strings.ReplaceAll(k, "'", `'\''`) + "'"
	}
	return cmd
}

// Dial connects to addr as root, from the namespace at nsPath when set.
func Dial(stateDir, vm, addr, nsPath string, timeout time.Duration) (*ssh.Client, error) {
	key, err := os.ReadFile(ClientKeyPath(stateDir))
	if err != nil {
		return nil, fmt.Errorf("microvm's SSH key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("microvm's SSH key: %w", err)
	}
	hostKey, err := HostPublicKey(stateDir, vm)
	if err != nil {
		return nil, err
	}
	hostport := net.JoinHostPort(addr, "22")
	conn, err := DialIn(nsPath, hostport, timeout)
	if err != nil {
		return nil, fmt.Errorf("connect to %s (%s): %w", vm, hostport, err)
	}
	// The handshake within timeout too: a guest whose kernel takes the
	// connection but whose SSH server does not answer is no answer.
	conn.SetDeadline(time.Now().Add(timeout))
	c, chans, reqs, err := ssh.NewClientConn(conn, hostport, &ssh.ClientConfig{
		User:            "root",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(hostKey),
		Timeout:         timeout,
	})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("ssh to %s: %w", vm, err)
	}
	conn.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}

// Session opens an SSH session to the VM as root (Dial, then a session);
// closing it closes the connection too.
func Session(stateDir, vm, addr, nsPath string, timeout time.Duration) (*ssh.Session, func(), error) {
	c, err := Dial(stateDir, vm, addr, nsPath, timeout)
	if err != nil {
		return nil, nil, err
	}
	s, err := c.NewSession()
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("ssh to %s: a session: %w", vm, err)
	}
	return s, func() { s.Close(); c.Close() }, nil
}

// Run runs cmd in the VM as root (Dial, then a session) within timeout,
// reached from the namespace at nsPath ("" = this one); the error has the
// command's output.
func Run(stateDir, vm, addr, nsPath, cmd string, timeout time.Duration) error {
	s, closeAll, err := Session(stateDir, vm, addr, nsPath, timeout)
	if err != nil {
		return err
	}
	defer closeAll()
	done := make(chan error, 1)
	go func() {
		out, err := s.CombinedOutput(cmd)
		if err != nil {
			err = fmt.Errorf("%s in %s: %w: %s", cmd, vm, err, strings.TrimSpace(string(out)))
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		return fmt.Errorf("%s in %s: no answer in %s", cmd, vm, timeout)
	}
}

// DialIn dials addr over TCP from inside the network namespace nsPath
// ("" = this one): the socket belongs to the
// namespace it was created in, whatever thread uses it afterwards.
func DialIn(nsPath, addr string, timeout time.Duration) (net.Conn, error) {
	return DialFromIn(nsPath, netip.Addr{}, addr, timeout)
}

// DialFromIn is DialIn from the local address from (the zero Addr: any).
func DialFromIn(nsPath string, from netip.Addr, addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	if from.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: from.AsSlice()}
	}
	if nsPath == "" {
		return d.Dial("tcp", addr)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return nil, err
	}
	defer orig.Close()
	target, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("network namespace %s: %w", nsPath, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return nil, err
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(fmt.Sprintf("vmssh: cannot return to the original network namespace: %v", err))
		}
	}()
	return d.Dial("tcp", addr)
}
