package launch

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"microvm.dev/microvm/internal/vmm"
	"microvm.dev/microvm/internal/vmmuser"
)

// makeRunDir makes a VM's run directory (sockets, initramfs): its parents
// open to all, itself root's alone until giveToVMM hands it over.
func makeRunDir(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return nil
}

// giveToVMM gives the hypervisor's user exactly what the hypervisor opens
// itself: the initramfs, the data volumes, the socket directory (and so
// nothing else of the state directory, whose VM directory it may only pass
// through). As root, the socket directory is root's.
func giveToVMM(u *vmmuser.User, lay vmm.Layout, l vmm.Launch) error {
	if u == nil {
		return os.Chown(lay.Run(), 0, 0)
	}
	// The hypervisor passes through the state directory to its VM's files:
	// microvm's own directories get search permission (never read or
	// write); one above them without it is an error that says so.
	vmDir := lay.Dir()
	vmsDir := filepath.Dir(vmDir)
	for _, d := range []string{filepath.Dir(vmsDir), vmsDir, vmDir} {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o011 != 0o011 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o011); err != nil {
				return err
			}
		}
	}
	for d := filepath.Dir(filepath.Dir(vmsDir)); ; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 == 0 && fi.Sys().(*syscall.Stat_t).Uid != u.UID {
			return fmt.Errorf("the hypervisors' user %s cannot pass through %s to the state directory (chmod o+x %s, or run hypervisors as root with --vmm-user root)", u.Name, d, d)
		}
		if d == "/" || d == "." {
			break
		}
	}
	paths := []string{lay.Run(), l.Initrd}
	for _, d := range l.Disks {
		paths = append(paths, d.Path)
	}
	return u.Own(paths...)
}
