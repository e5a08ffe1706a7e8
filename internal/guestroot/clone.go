package guestroot

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"microvm.dev/microvm/internal/guest"
)

// HostKeyPath is where, in the root, a clone's SSH host key is written
// when it takes on its identity; the guest's SSH server reads it at every
// connection and uses the spec's key while there is none.
const HostKeyPath = "/run/microvm/ssh_host_key"

// WorkloadPIDPath holds the pid of the workload microvm-init started (its
// process group), which a template freezes before it is saved.
const WorkloadPIDPath = "/run/microvm/workload.pid"

// FrozenPath lists the cgroups a template froze (an image's own init),
// thawed when a clone has taken on its identity.
const FrozenPath = "/run/microvm/frozen"

// WriteHostKey makes pem the SSH server's host key.
func (r Root) WriteHostKey(pem string) error {
	return writeAtomic(r.Path(HostKeyPath), []byte(pem), 0o600)
}

// HostKey is the host key written by WriteHostKey ("" when there is none).
func (r Root) HostKey() string {
	b, err := os.ReadFile(r.Path(HostKeyPath))
	if err != nil {
		return ""
	}
	return string(b)
}

// WriteWorkloadPID records the workload's pid.
func (r Root) WriteWorkloadPID(pid int) error {
	return writeAtomic(r.Path(WorkloadPIDPath), []byte(strconv.Itoa(pid)+"\n"), 0o644)
}

// WorkloadPID is the recorded workload's pid (0: none).
func (r Root) WorkloadPID() int {
	b, err := os.ReadFile(r.Path(WorkloadPIDPath))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// Reidentify writes a clone's identity files: /etc/hostname, /etc/hosts
// and /etc/resolv.conf for its name and network (WriteIdentity), its
// machine-id, its SSH host key and the keys
// that may log in.
func (r Root) Reidentify(id guest.Identity) error {
	if err := r.WriteIdentity(&guest.Spec{Name: id.Name, Net: id.Net}); err != nil {
		return fmt.Errorf("identity files: %w", err)
	}
	if id.MachineID != "" {
		os.Remove(r.Path("/etc/machine-id"))
		if err := os.WriteFile(r.Path("/etc/machine-id"), []byte(id.MachineID+"\n"), 0o444); err != nil {
			return fmt.Errorf("machine-id: %w", err)
		}
	}
	if err := r.WriteHostKey(id.HostKey); err != nil {
		return fmt.Errorf("host key: %w", err)
	}
	if err := r.WriteAuthorized(id.AuthorizedKeys); err != nil {
		return fmt.Errorf("authorized keys: %w", err)
	}
	return nil
}

// writeAtomic replaces the file at path (its directory made) by a new one
// renamed over it: a reader sees the old content or the new.
func writeAtomic(path string, b []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".new"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
