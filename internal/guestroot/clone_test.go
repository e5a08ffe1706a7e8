package guestroot

import (
	"strings"
	"testing"

	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/sshkey"
)

// A clone's identity replaces the template's files: hostname, hosts,
// resolvers, machine-id (a link in the image replaced), the SSH host key
// the server reads at each connection and the keys it lets in.
func TestReidentify(t *testing.T) {
	dir := t.TempDir()
	root := Root(dir)
	write(t, dir, "etc/hostname", "tpl\n", 0o644)
	link(t, dir, "etc/machine-id", "/run/machine-id")
	write(t, dir, "run/microvm/workload.pid", "42\n", 0o644)
	_, pem, err := sshkey.Ensure(t.TempDir()+"/key", "test")
	if err != nil {
		t.Fatal(err)
	}
	const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJr/NPIh1zR4k/yjj3cbRAl0CFTO2Kl/Vk6cdUr7sbyV x"
	id := guest.Identity{Generation: "g", Name: "c1", Net: guest.NetSpec{Address: "10.3.0.2/24", Gateway: "10.3.0.1", DNS: []string{"10.3.0.1"}},
		HostKey: string(pem), AuthorizedKeys: []string{key}, MachineID: "0123456789abcdef0123456789abcdef"}
	if err := root.Reidentify(id); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"/etc/hostname":    "c1\n",
		"/etc/machine-id":  id.MachineID + "\n",
		"/etc/resolv.conf": "nameserver 10.3.0.1\n",
	} {
		if got := read(t, root.Path(path)); got != want {
			t.Errorf("%s: %q, want %q", path, got, want)
		}
	}
	if hosts := read(t, root.Path("/etc/hosts")); !strings.Contains(hosts, "10.3.0.2\tc1\n") {
		t.Errorf("/etc/hosts: %q", hosts)
	}
	if root.HostKey() != string(pem) {
		t.Error("the host key the server reads is not the clone's")
	}
	if got, err := root.Authorized(); err != nil || len(got) != 1 || got[0] != key {
		t.Errorf("authorized keys: %v %v", got, err)
	}
	if root.WorkloadPID() != 42 {
		t.Errorf("workload pid %d", root.WorkloadPID())
	}
}
