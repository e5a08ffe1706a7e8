package guest

import (
	"fmt"
	"strconv"
	"strings"
)

// DefaultPath is the PATH of workloads and sessions unless the image sets
// one.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// User is a workload's identity resolved against an image's /etc/passwd
// and /etc/group.
type User struct {
	// Name is the login name ("" for a uid the image does not list).
	Name     string
	UID, GID uint32
	// Groups are the supplementary groups: those of /etc/group that list
	// Name as a member, besides GID.
	Groups []uint32
	// Home is the passwd entry's home ("/" for an unlisted uid).
	Home string
}

// LookupUser resolves a user as Docker takes it: a name or uid, with an
// optional group name or gid after a colon (name, uid, uid:gid,
// name:group), in the image's passwd and group files (their contents). A
// uid the image does not list runs with gid = uid, as with Docker; a name
// or group it does not list is an error naming the file. "" is root.
// The host (checking an image) and microvm-init (running the workload) use
// this one resolution.
func LookupUser(spec string, passwd, group []byte) (User, error) {
	if spec == "" {
		spec = "root"
	}
	name, grp, hasGroup := strings.Cut(spec, ":")
	u, err := lookupAccount(name, passwd)
	if err != nil {
		return User{}, err
	}
	if hasGroup {
		if u.GID, err = lookupGroup(grp, group); err != nil {
			return User{}, err
		}
	}
	if u.Name != "" {
		u.Groups = memberOf(u.Name, u.GID, group)
	}
	return u, nil
}

// entries splits a colon-separated file into its lines' fields, skipping
// comments and lines with fewer than n fields.
func entries(b []byte, n int) [][]string {
	var out [][]string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Split(line, ":"); len(f) >= n && !strings.HasPrefix(line, "#") {
			out = append(out, f)
		}
	}
	return out
}

func lookupAccount(name string, passwd []byte) (User, error) {
	for _, f := range entries(passwd, 7) {
		if f[0] != name && f[2] != name {
			continue
		}
		uid, err1 := strconv.ParseUint(f[2], 10, 32)
		gid, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 != nil || err2 != nil {
			return User{}, fmt.Errorf("user %q: bad passwd entry %q", name, strings.Join(f, ":"))
		}
		return User{Name: f[0], UID: uint32(uid), GID: uint32(gid), Home: f[5]}, nil
	}
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		return User{UID: uint32(n), GID: uint32(n), Home: "/"}, nil
	}
	return User{}, fmt.Errorf("user %q is not in its /etc/passwd", name)
}

func lookupGroup(group string, groups []byte) (uint32, error) {
	for _, f := range entries(groups, 3) {
		if f[0] == group || f[2] == group {
			g, err := strconv.ParseUint(f[2], 10, 32)
			if err != nil {
				return 0, fmt.Errorf("group %q: bad group entry %q", group, strings.Join(f, ":"))
			}
			return uint32(g), nil
		}
	}
	if n, err := strconv.ParseUint(group, 10, 32); err == nil {
		return uint32(n), nil
	}
	return 0, fmt.Errorf("group %q is not in its /etc/group", group)
}

func memberOf(name string, gid uint32, groups []byte) []uint32 {
	var out []uint32
	for _, f := range entries(groups, 4) {
		g, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil || uint32(g) == gid {
			continue
		}
		for _, m := range strings.Split(f[3], ",") {
			if m == name {
				out = append(out, uint32(g))
			}
		}
	}
	return out
}
