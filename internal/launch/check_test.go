package launch

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/store"
)

// tree makes a small image root: /usr/sbin/nginx, /bin -> usr/bin (a
// relative link, as merged-/usr Debian has), /sbin/init -> an absolute
// link to systemd, and passwd/group entries.
func tree(t *testing.T) string {
	dir := t.TempDir()
	for _, d := range []string{"usr/sbin", "usr/bin", "lib/systemd", "etc"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	os.WriteFile(filepath.Join(dir, "usr/sbin/nginx"), []byte("#!"), 0o755)
	os.WriteFile(filepath.Join(dir, "usr/bin/sh"), []byte("#!"), 0o755)
	os.WriteFile(filepath.Join(dir, "usr/bin/notexec"), []byte("data"), 0o644)
	os.WriteFile(filepath.Join(dir, "lib/systemd/systemd"), []byte("#!"), 0o755)
	os.Symlink("usr/bin", filepath.Join(dir, "bin"))
	os.MkdirAll(filepath.Join(dir, "sbin"), 0o755)
	os.Symlink("/lib/systemd/systemd", filepath.Join(dir, "sbin/init"))
	os.Symlink("/../../../etc/passwd", filepath.Join(dir, "escape"))
	os.WriteFile(filepath.Join(dir, "etc/passwd"), []byte("root:x:0:0::/root:/bin/sh\nwww-data:x:33:33::/var/www:/usr/sbin/nologin\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "etc/group"), []byte("root:x:0:\nwww-data:x:33:\nadm:x:4:www-data\n"), 0o644)
	return dir
}

func TestCheckImage(t *testing.T) {
	dir := tree(t)
	img := store.Image{Config: store.Config{Entrypoint: []string{"nginx"}, Cmd: []string{"-g", "daemon off;"}, User: "www-data"}}
	cases := []struct {
		name string
		vm   config.VM
		img  store.Image
		want string // "" = accepted
	}{
		{"the image's own entrypoint and user", config.VM{}, img, ""},
		{"a shell string", config.VM{Command: []string{"echo hi; sleep 1"}}, store.Image{}, ""},
		{"an absolute command through a link", config.VM{Command: []string{"/bin/sh", "-c", "true"}}, store.Image{}, ""},
		{"uid:gid without entries", config.VM{Command: []string{"sh"}, User: "1000:1000"}, store.Image{}, ""},
		{"name:group", config.VM{Command: []string{"sh"}, User: "www-data:adm"}, store.Image{}, ""},
		{"init: image through an absolute link", config.VM{Init: config.InitImage}, store.Image{}, ""},
		{"a missing entrypoint", config.VM{}, store.Image{Config: store.Config{Entrypoint: []string{"nginxx"}}}, `vms.web.image: image "web:1" cannot run "nginxx": no executable nginxx on PATH`},
		{"a missing command", config.VM{Command: []string{"/usr/sbin/apache2"}}, store.Image{}, `vms.web.command: image "web:1" cannot run "/usr/sbin/apache2"`},
		{"not executable", config.VM{Command: []string{"/usr/bin/notexec"}}, store.Image{}, "is not an executable file"},
		{"a link out of the tree", config.VM{Command: []string{"/escape"}}, store.Image{}, "vms.web.command"},
		{"an unknown user", config.VM{Command: []string{"sh"}, User: "postgres"}, store.Image{}, `vms.web.user: image "web:1": user "postgres" is not in its /etc/passwd`},
		{"an unknown group", config.VM{Command: []string{"sh"}, User: "www-data:wheel"}, store.Image{}, `group "wheel" is not in its /etc/group`},
	}
	for _, c := range cases {
		vm := c.vm
		vm.Name, vm.Image = "web", "web:1"
		err := CheckImage(&vm, c.img, dir)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: err = %v, want %q", c.name, err, c.want)
		}
	}
	noInit := t.TempDir()
	vm := config.VM{Name: "m", Image: "bare", Init: config.InitImage}
	if err := CheckImage(&vm, store.Image{}, noInit); err == nil || !strings.Contains(err.Error(), `vms.m.init: init: image, but image "bare" has no init`) {
		t.Errorf("no init: %v", err)
	}
}

// Image volumes no VM volume covers are named in a warning.
func TestImageVolumeWarnings(t *testing.T) {
	vm := &config.VM{Name: "db", Image: "postgres", Volumes: []config.Volume{{Name: "data", MountPoint: "/var/lib/postgresql"}}}
	w := imageVolumeWarnings(vm, store.Config{Volumes: []string{"/var/lib/postgresql/data", "/var/log/app"}})
	if len(w) != 1 || !strings.Contains(w[0], "/var/log/app") {
		t.Errorf("warnings = %q", w)
	}
}

// A VM's machine-id is 32 hex digits, the same for the same VM and host
// key, different for another VM.
func TestMachineID(t *testing.T) {
	a, b := machineID("vm1", []byte("key")), machineID("vm1", []byte("key"))
	if a != b || len(a) != 32 || strings.Trim(a, "0123456789abcdef") != "" || machineID("vm2", []byte("key")) == a {
		t.Errorf("machine ids %q %q", a, machineID("vm2", []byte("key")))
	}
}
