package guest

import (
	"encoding/json"
	"path"
	"strings"
	"testing"
)

func goodSpec() *Spec {
	return &Spec{
		Name:     "vm1",
		Net:      NetSpec{MAC: "02:00:00:00:00:01", Address: "10.1.0.2/24", Gateway: "10.1.0.1", DNS: []string{"1.1.1.1"}},
		Store:    ShareSpec{Tag: "store", FSType: "ext4", Serial: "microvm-store", Device: "vda"},
		Volumes:  []VolumeSpec{{Name: "data", MountPoint: "/mnt/storage", Device: "vdb"}},
		SSH:      SSHSpec{AuthorizedKeys: []string{"ssh-ed25519 AAAA"}},
		Workload: &Workload{Command: []string{"/bin/httpd"}, Env: map[string]string{"A": "1"}, Workdir: "/srv"},
		Secrets:  []SecretFile{{Path: "/run/secrets/token", Mode: 0o400, Owner: "nobody", Data: []byte("s3cret")}},
	}
}

func TestParseSpec(t *testing.T) {
	b, _ := json.Marshal(goodSpec())
	if _, err := ParseSpec(b); err != nil {
		t.Fatalf("a good spec: %v", err)
	}
	for name, c := range map[string]struct {
		mutate func(*Spec)
		want   string
	}{
		"name":          {func(s *Spec) { s.Name = "../x" }, "not a VM name"},
		"mac":           {func(s *Spec) { s.Net.MAC = "zz" }, "net.mac"},
		"address":       {func(s *Spec) { s.Net.Address = "10.1.0.2" }, "net.address"},
		"gateway":       {func(s *Spec) { s.Net.Gateway = "10.9.0.1" }, "net.gateway"},
		"fstype":        {func(s *Spec) { s.Store.FSType = "nfs" }, "store.fstype"},
		"store device":  {func(s *Spec) { s.Store.Device = "../sda" }, "store.device"},
		"image escape":  {func(s *Spec) { s.Store.Image = "../../etc" }, "leaves the store"},
		"mount escape":  {func(s *Spec) { s.Volumes[0].MountPoint = "/mnt/../etc/../.." }, "clean absolute path"},
		"mount root":    {func(s *Spec) { s.Volumes[0].MountPoint = "/" }, "clean absolute path"},
		"volume device": {func(s *Spec) { s.Volumes[0].Device = "sda1" }, "not a virtio disk"},
		"empty command": {func(s *Spec) { s.Workload.Command = nil }, "workload.command"},
		"workdir":       {func(s *Spec) { s.Workload.Workdir = "srv" }, "workload.workdir"},
		"env":           {func(s *Spec) { s.Workload.Env = map[string]string{"A=B": "x"} }, "workload.env"},
		"secret path":   {func(s *Spec) { s.Secrets[0].Path = "run/x" }, "secrets[0]"},
		"secret dotdot": {func(s *Spec) { s.Secrets[0].Path = "/run/../x" }, "secrets[0]"},
		"secret mode":   {func(s *Spec) { s.Secrets[0].Mode = 0o4755 }, "secrets[0]"},
		"secret volume": {func(s *Spec) { s.Secrets[0].Path = "/mnt/storage/key" }, "on the volume data"},
	} {
		s := goodSpec()
		c.mutate(s)
		b, _ := json.Marshal(s)
		if _, err := ParseSpec(b); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", name, err, c.want)
		}
	}
	if _, err := ParseSpec([]byte("{")); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("truncated: %v", err)
	}
}

// FuzzParseSpec feeds arbitrary bytes to the guest's spec decoder: no
// panic, and an accepted spec keeps the invariants microvm-init relies on.
func FuzzParseSpec(f *testing.F) {
	b, _ := json.Marshal(goodSpec())
	f.Add(b)
	f.Add([]byte(`{"name":"a","net":{"mac":"02:00:00:00:00:01","address":"10.0.0.2/30","gateway":"10.0.0.1"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSpec(b)
		if err != nil {
			return
		}
		for _, v := range s.Volumes {
			if !path.IsAbs(v.MountPoint) || path.Clean(v.MountPoint) != v.MountPoint || v.MountPoint == "/" {
				t.Fatalf("accepted mount point %q", v.MountPoint)
			}
		}
		if strings.HasPrefix(s.Store.Image, "/") || strings.HasPrefix(s.Store.Image, "../") || s.Store.Image == ".." {
			t.Fatalf("accepted store image %q", s.Store.Image)
		}
		if s.Workload != nil && len(s.Workload.Command) == 0 {
			t.Fatal("accepted an empty workload")
		}
		for _, f := range s.Secrets {
			if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || f.Mode > 0o777 {
				t.Fatalf("accepted secret %q mode %o", f.Path, f.Mode)
			}
		}
	})
}
