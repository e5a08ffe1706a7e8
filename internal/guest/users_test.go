package guest

import (
	"slices"
	"strings"
	"testing"
)

const (
	passwd = "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\npostgres:x:100:102::/var/lib/postgresql:/bin/bash\n"
	group  = "root:x:0:\nadm:x:4:www-data\nwww-data:x:33:\nssl-cert:x:101:postgres\npostgres:x:102:\n"
)

// Docker's forms of a user, resolved once for the host's check and the
// guest's workload.
func TestLookupUser(t *testing.T) {
	cases := []struct {
		spec string
		want User
		err  string
	}{
		{"", User{Name: "root", Home: "/root"}, ""},
		{"www-data", User{Name: "www-data", UID: 33, GID: 33, Groups: []uint32{4}, Home: "/var/www"}, ""},
		{"33", User{Name: "www-data", UID: 33, GID: 33, Groups: []uint32{4}, Home: "/var/www"}, ""},
		{"www-data:adm", User{Name: "www-data", UID: 33, GID: 4, Home: "/var/www"}, ""},
		{"postgres:0", User{Name: "postgres", UID: 100, GID: 0, Groups: []uint32{101}, Home: "/var/lib/postgresql"}, ""},
		{"1000:1000", User{UID: 1000, GID: 1000, Home: "/"}, ""},
		{"1000", User{UID: 1000, GID: 1000, Home: "/"}, ""},
		{"nginx", User{}, `user "nginx" is not in its /etc/passwd`},
		{"www-data:wheel", User{}, `group "wheel" is not in its /etc/group`},
	}
	for _, c := range cases {
		got, err := LookupUser(c.spec, []byte(passwd), []byte(group))
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%q: err %v, want %q", c.spec, err, c.err)
		case c.err == "" && (err != nil || got.Name != c.want.Name || got.UID != c.want.UID || got.GID != c.want.GID || got.Home != c.want.Home || !slices.Equal(got.Groups, c.want.Groups)):
			t.Errorf("%q = %+v, %v; want %+v", c.spec, got, err, c.want)
		}
	}
}
