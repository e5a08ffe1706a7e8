// Package vmmuser runs hypervisors as an unprivileged user: it resolves
// the user, builds the setpriv prefix that drops to it (no capabilities,
// an empty bounding set, no_new_privs, only the groups it needs) and gives
// that user the files a hypervisor opens itself.
package vmmuser

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// DefaultName is the user hypervisors run as unless told otherwise.
const DefaultName = "microvm"

// CreateCommand makes the default user as it should be: a system user
// whose group is nogroup, never the API socket's group.
const CreateCommand = "useradd --system --gid nogroup --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin " + DefaultName

// ErrNoUser means the named user does not exist on this host.
var ErrNoUser = errors.New("no such user")

// User is the identity a hypervisor runs as.
type User struct {
	// Name, UID and GID are the user and its primary group.
	Name     string
	UID, GID uint32
	// GroupName is the primary group's name (virtiofsd's --socket-group).
	GroupName string
	// Groups are the supplementary groups: /dev/kvm's group where it
	// exists, nothing else.
	Groups []uint32
	// IDs, when set, is the range each VM's hypervisor takes an id of its
	// own from (ForVM); nil: every hypervisor runs as this user.
	IDs *Range
}

// Lookup resolves name. "" and "root" mean hypervisors run as root (nil,
// nil). A user whose groups would give the hypervisor the API socket's
// group (apiGroup, "" for none) is refused: a hypervisor must not be able
// to command the daemon.
func Lookup(name, apiGroup string) (*User, error) {
	if name == "" || name == "root" {
		return nil, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			return nil, fmt.Errorf("vmm user %s: %w (create it: %s)", name, ErrNoUser, strings.Replace(CreateCommand, DefaultName, name, 1))
		}
		return nil, fmt.Errorf("vmm user %s: %w", name, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("vmm user %s: %w", name, err)
	}
	if uid == 0 {
		return nil, fmt.Errorf("vmm user %s has uid 0: that is root", name)
	}
	out := &User{Name: name, UID: uint32(uid), GID: uint32(gid), GroupName: u.Gid}
	if g, err := user.LookupGroupId(u.Gid); err == nil {
		out.GroupName = g.Name
	}
	if apiGroup != "" && out.GroupName == apiGroup {
		return nil, fmt.Errorf("vmm user %s has %s as its group, the group that may use microvm's API socket: give it another primary group (usermod -g nogroup %s)", name, apiGroup, name)
	}
	if fi, err := os.Stat("/dev/kvm"); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Gid != 0 && fi.Mode().Perm()&0o060 == 0o060 {
			out.Groups = append(out.Groups, st.Gid)
		}
	}
	return out, nil
}

// CanOpen says whether u, with its groups, may open path for reading and
// writing (as /dev/kvm and /dev/vhost-net are opened). False when path
// does not exist.
func (u *User) CanOpen(path string) bool {
	fi, err := os.Stat(path)
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	perm := fi.Mode().Perm()
	switch {
	case st.Uid == u.UID:
		return perm&0o600 == 0o600
	case st.Gid == u.GID || slices.Contains(u.Groups, st.Gid):
		return perm&0o060 == 0o060
	}
	return perm&0o006 == 0o006
}

// Prefix is the command line that runs what follows it as u, with no
// capabilities but keep (names as capabilities(7) spells them without
// "cap_", such as "dac_read_search"), in a bounding set holding only keep,
// and with no_new_privs, so neither a set-id binary nor a file capability
// can give it more.
func (u *User) Prefix(keep ...string) []string {
	groups := make([]string, 0, len(u.Groups))
	for _, g := range u.Groups {
		groups = append(groups, strconv.FormatUint(uint64(g), 10))
	}
	caps := "-all"
	for _, c := range keep {
		caps += ",+" + c
	}
	argv := []string{"setpriv",
		"--reuid=" + strconv.FormatUint(uint64(u.UID), 10),
		"--regid=" + strconv.FormatUint(uint64(u.GID), 10)}
	if len(groups) > 0 {
		argv = append(argv, "--groups="+strings.Join(groups, ","))
	} else {
		argv = append(argv, "--clear-groups")
	}
	argv = append(argv, "--inh-caps="+caps, "--bounding-set="+caps)
	if len(keep) > 0 {
		argv = append(argv, "--ambient-caps=+"+strings.Join(keep, ",+"))
	}
	return append(argv, "--no-new-privs", "--")
}

// Own gives u each path that exists (owner u, group u's primary group),
// leaving modes as they are.
func (u *User) Own(paths ...string) error {
	for _, p := range paths {
		if err := os.Lchown(p, int(u.UID), int(u.GID)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("give %s to %s: %w", p, u.Name, err)
		}
	}
	return nil
}
