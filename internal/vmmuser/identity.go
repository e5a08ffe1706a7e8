package vmmuser

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Range is a block of ids (uids, and gids beside them) of which each VM's
// hypervisor gets one of its own: the subordinate ids of the hypervisors'
// user (/etc/subuid and /etc/subgid), or a range given on the command line.
type Range struct {
	// UID and GID are the first uid and gid; Count how many there are.
	UID, GID, Count uint32
}

// ParseRange reads "START:COUNT" (uids and gids alike).
func ParseRange(s string) (Range, error) {
	a, b, ok := strings.Cut(s, ":")
	start, err1 := strconv.ParseUint(a, 10, 32)
	count, err2 := strconv.ParseUint(b, 10, 32)
	if !ok || err1 != nil || err2 != nil || start == 0 || count == 0 || start+count > 1<<32-2 {
		return Range{}, fmt.Errorf("id range %q is not START:COUNT (for example 1879048192:65536)", s)
	}
	return Range{UID: uint32(start), GID: uint32(start), Count: uint32(count)}, nil
}

// Subordinate is name's subordinate id range from subuid and subgid (the
// files, /etc/subuid and /etc/subgid on a host); ok is false when either
// has none for it. Of several, the first of each is used, for as many ids
// as both have.
func Subordinate(name, subuid, subgid string) (r Range, ok bool, err error) {
	u, uok, err1 := firstRange(subuid, name)
	g, gok, err2 := firstRange(subgid, name)
	if err := errors.Join(err1, err2); err != nil {
		return Range{}, false, err
	}
	if !uok || !gok {
		return Range{}, false, nil
	}
	return Range{UID: u[0], GID: g[0], Count: min(u[1], g[1])}, true, nil
}

func firstRange(path, name string) ([2]uint32, bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return [2]uint32{}, false, nil
	}
	if err != nil {
		return [2]uint32{}, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Split(strings.TrimSpace(sc.Text()), ":")
		if len(parts) != 3 || parts[0] != name {
			continue
		}
		start, err1 := strconv.ParseUint(parts[1], 10, 32)
		count, err2 := strconv.ParseUint(parts[2], 10, 32)
		if err1 != nil || err2 != nil || start == 0 || count == 0 {
			return [2]uint32{}, false, fmt.Errorf("%s: unreadable range for %s: %q", path, name, sc.Text())
		}
		return [2]uint32{uint32(start), uint32(count)}, true, nil
	}
	return [2]uint32{}, false, sc.Err()
}

// ForVM is the identity of one VM's hypervisor: the id at offset in u's
// range, with u's supplementary groups (/dev/kvm's) and nothing else. It
// owns only that VM's files, so one VM's hypervisor cannot open another's
// volumes, console log or sockets.
func (u *User) ForVM(offset uint32) *User {
	return &User{Name: fmt.Sprintf("%s+%d", u.Name, offset), UID: u.IDs.UID + offset, GID: u.IDs.GID + offset, Groups: u.Groups}
}

// IdentityFile is where a VM's directory records the offset of its
// hypervisor's id in the range.
const IdentityFile = "identity"

// Offsets are the ids of the VMs of one state directory: each VM keeps the
// one it was given first (recorded in its directory), and a new VM gets the
// lowest one free.
type Offsets struct {
	// VMsDir holds one directory per VM.
	VMsDir string
	// Count is the size of the range.
	Count uint32
}

// Lookup returns vm's offset, or with allocate false the one it would get
// (nothing written).
func (o Offsets) Lookup(vm string, allocate bool) (uint32, error) {
	if b, err := os.ReadFile(filepath.Join(o.VMsDir, vm, IdentityFile)); err == nil {
		n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
		if err != nil || uint32(n) >= o.Count {
			return 0, fmt.Errorf("%s's identity file holds %q, not an offset below %d", vm, b, o.Count)
		}
		return uint32(n), nil
	}
	if allocate {
		if err := os.MkdirAll(o.VMsDir, 0o755); err != nil {
			return 0, err
		}
		lock, err := os.OpenFile(filepath.Join(o.VMsDir, ".identity.lock"), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return 0, fmt.Errorf("identity lock: %w", err)
		}
		defer lock.Close()
		if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
			return 0, fmt.Errorf("identity lock: %w", err)
		}
		// Under the lock, another process may have given it one since.
		if b, err := os.ReadFile(filepath.Join(o.VMsDir, vm, IdentityFile)); err == nil {
			if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32); err == nil && uint32(n) < o.Count {
				return uint32(n), nil
			}
		}
	}
	used := map[uint32]bool{}
	entries, _ := os.ReadDir(o.VMsDir)
	for _, e := range entries {
		if b, err := os.ReadFile(filepath.Join(o.VMsDir, e.Name(), IdentityFile)); err == nil && e.Name() != vm {
			if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32); err == nil {
				used[uint32(n)] = true
			}
		}
	}
	// Offset 0 is left out: the range's first id is nobody's.
	for n := uint32(1); n < o.Count; n++ {
		if used[n] {
			continue
		}
		if allocate {
			dir := filepath.Join(o.VMsDir, vm)
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return 0, err
			}
			path := filepath.Join(dir, IdentityFile)
			err := os.WriteFile(path+".tmp", []byte(strconv.FormatUint(uint64(n), 10)+"\n"), 0o644)
			if err == nil {
				err = os.Rename(path+".tmp", path)
			}
			if err != nil {
				return 0, fmt.Errorf("%s's identity: %w", vm, err)
			}
		}
		return n, nil
	}
	return 0, fmt.Errorf("all %d ids of the hypervisors' range are taken", o.Count-1)
}
