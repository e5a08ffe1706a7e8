package launch

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/confine"
	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/hostnet"
	"microvm.dev/microvm/internal/store"
	"microvm.dev/microvm/internal/vmm"
	"microvm.dev/microvm/internal/vmm/backends"
	"microvm.dev/microvm/internal/vmmuser"
)

func TestShareKind(t *testing.T) {
	fc, _ := backends.Get(config.HypervisorFirecracker)
	ch, _ := backends.Get(config.HypervisorCloudHypervisor)
	q, _ := backends.Get(config.HypervisorQEMU)
	cases := []struct {
		share string
		b     vmm.Backend
		want  string
		err   string
	}{
		{"", fc, vmm.ShareBlock, ""},
		{"auto", fc, vmm.ShareBlock, ""},
		{"9p", fc, "", "firecracker cannot share the store over 9p (it supports block)"},
		{"9p", ch, "", "cloud-hypervisor cannot share the store over 9p"},
		{"block", ch, vmm.ShareBlock, ""},
		{"9p", q, vmm.Share9p, ""},
		{"block", q, vmm.ShareBlock, ""},
		{"nfs", q, "", "unknown share type"},
	}
	for _, c := range cases {
		got, err := Env{Share: c.share}.ShareKind(c.b, nil)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s/%s: err = %v, want %q", c.b.Name(), c.share, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s/%s = %q, %v; want %q", c.b.Name(), c.share, got, err, c.want)
		}
	}
	// auto: QEMU takes virtiofs exactly when a virtiofsd is installed.
	want := vmm.Share9p
	if Virtiofsd() != "" {
		want = vmm.ShareVirtiofs
	}
	if got, _ := (Env{}).ShareKind(q, nil); got != want {
		t.Errorf("qemu auto = %s, want %s", got, want)
	}
	// A VM's own store key wins over the host's, and its errors name it.
	vm := &config.VM{Name: "db", Store: "block"}
	if got, err := (Env{Share: "9p"}).ShareKind(q, vm); got != vmm.ShareBlock || err != nil {
		t.Errorf("qemu with store: block = %q, %v", got, err)
	}
	vm.Store = "auto"
	if got, _ := (Env{Share: "9p"}).ShareKind(q, vm); got != vmm.Share9p {
		t.Errorf("store: auto takes the host's choice, got %q", got)
	}
	vm.Store = "9p"
	if _, err := (Env{}).ShareKind(fc, vm); err == nil || !strings.Contains(err.Error(), "vms.db.store: firecracker cannot share the store over 9p") {
		t.Errorf("firecracker with store: 9p: %v", err)
	}
}

func TestWorkloadFromImageConfig(t *testing.T) {
	img := store.Config{Entrypoint: []string{"/bin/httpd"}, Cmd: []string{"-f", "-p", "8080"}, Env: []string{"PATH=/bin", "MODE=img"}, WorkingDir: "/srv", User: "www"}
	w := Workload(&config.VM{Env: map[string]string{"MODE": "vm"}}, img)
	if strings.Join(w.Command, " ") != "/bin/httpd -f -p 8080" || w.Env["MODE"] != "vm" || w.Env["PATH"] != "/bin" || w.Workdir != "/srv" || w.User != "www" {
		t.Errorf("workload = %+v", w)
	}
	w = Workload(&config.VM{Command: []string{"sleep", "1"}, User: "root", Workdir: "/"}, img)
	if strings.Join(w.Command, " ") != "sleep 1" || w.User != "root" || w.Workdir != "/" {
		t.Errorf("the VM's own settings do not win: %+v", w)
	}
	// Args as a container's: after the command, or after the image's
	// entrypoint in place of its cmd.
	if w = Workload(&config.VM{Args: []string{"-p", "9090"}}, img); strings.Join(w.Command, " ") != "/bin/httpd -p 9090" {
		t.Errorf("args without a command: %q", w.Command)
	}
	if w = Workload(&config.VM{Command: []string{"/bin/sh", "-c"}, Args: []string{"echo a b"}}, img); strings.Join(w.Command, "|") != "/bin/sh|-c|echo a b" {
		t.Errorf("args after a command: %q", w.Command)
	}
	if Workload(&config.VM{}, store.Config{}) != nil {
		t.Error("a workload without a command")
	}
}

func TestRotateConsole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	f, _ := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600) // as the VMM holds it
	defer f.Close()
	f.WriteString(strings.Repeat("a", 100))
	if rotated, err := RotateConsole(path, 200); rotated || err != nil {
		t.Fatalf("rotated a small log: %v %v", rotated, err)
	}
	f.WriteString(strings.Repeat("b", 150))
	if rotated, err := RotateConsole(path, 200); !rotated || err != nil {
		t.Fatalf("did not rotate: %v %v", rotated, err)
	}
	f.WriteString("after\n") // the writer keeps its descriptor
	old, _ := os.ReadFile(path + ".1")
	cur, _ := os.ReadFile(path)
	if len(old) != 250 || string(cur) != "after\n" {
		t.Errorf("old %d bytes, current %q", len(old), cur)
	}
}

// A confined hypervisor's root holds its VM's run directory, console log,
// volumes and files written for it writable (what the run directory holds
// once), its kernel and store read-only, and the devices it opens; nothing
// of another VM.
func TestConfinedRoot(t *testing.T) {
	lay := vmm.Layout{StateDir: "/srv/mv", RunDir: "/run/mv", VM: "a"}
	l := lay.Launch(&config.VM{Name: "a", Volumes: []config.Volume{{Name: "data"}, {Name: "logs"}}}, vmm.Capabilities{ControlSocket: "qmp.sock"})
	l.Kernel, l.Initrd, l.KVM, l.TAPFD = "/var/cache/k/vmlinux", lay.Initrd(), true, 3
	l.Modules = "/srv/mv/cache/modules/k.ext4"
	l.Shares = []vmm.Share{{Tag: "store", Path: "/srv/mv/store/trees/x", Block: "/srv/mv/cache/store-blocks/x.ext4"}}
	cmd := vmm.Command{Files: map[string][]byte{lay.Run() + "/config.json": nil, lay.Dir() + "/firecracker.log": nil}}
	s := confined(lay, l, cmd)
	want := confine.Spec{
		Root:     "/run/mv/vms/a/root",
		Writable: []string{"/run/mv/vms/a", "/srv/mv/vms/a/console.log", "/srv/mv/vms/a/data.img", "/srv/mv/vms/a/logs.img", "/srv/mv/vms/a/firecracker.log"},
		ReadOnly: []string{"/var/cache/k/vmlinux", "/srv/mv/cache/modules/k.ext4", "/srv/mv/cache/store-blocks/x.ext4"},
		Devices:  []string{"/dev/kvm"},
	}
	if !reflect.DeepEqual(*s, want) {
		t.Errorf("confined root:\n got %+v\nwant %+v", *s, want)
	}
	// 9p: the store tree itself; a TAP opened by name: /dev/net/tun.
	l.Shares, l.TAPFD, l.KVM, l.VHostNet = []vmm.Share{{Tag: "store", Path: "/srv/mv/store/trees/x"}}, 0, false, true
	s = confined(lay, l, vmm.Command{SerialToStdout: true})
	if !slices.Contains(s.ReadOnly, "/srv/mv/store/trees/x") || slices.Contains(s.Writable, l.ConsoleLog) ||
		!reflect.DeepEqual(s.Devices, []string{"/dev/vhost-net", "/dev/net/tun"}) {
		t.Errorf("9p, serial to stdout, TAP by name: %+v", *s)
	}
}

// With a range of ids, a hypervisor that opens its TAP by name
// (cloud-hypervisor, Firecracker) is given an id of its own at the
// network's apply, and its TAP is that id's; QEMU's TAP (opened by root
// and handed over) stays the shared user's.
func TestTAPOwners(t *testing.T) {
	state := t.TempDir()
	u := &vmmuser.User{Name: "microvm", UID: 999, GID: 998, IDs: &vmmuser.Range{UID: 1879048192, GID: 1879048192, Count: 65536}}
	cfg, err := config.Parse("t.yaml", []byte("vms: { a: { index: 1, hypervisor: cloud-hypervisor }, b: { index: 2 }, c: { index: 3, hypervisor: firecracker } }"), config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	env := Env{StateDir: state, VMMUser: u}
	got, err := env.TAPOwners(cfg, true)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]hostnet.Owner{"a": {UID: 1879048193, GID: 1879048193}, "c": {UID: 1879048194, GID: 1879048194}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("TAPOwners = %v, want %v", got, want)
	}
	// The VM keeps its id: the launch resolves the same one.
	if ru, err := env.vmmUser("a", false); err != nil || ru.UID != 1879048193 || ru.GID != 1879048193 {
		t.Errorf("a's hypervisor runs as %+v (%v)", ru, err)
	}
	if got, _ := env.TAPOwners(cfg, true); !reflect.DeepEqual(got, want) {
		t.Errorf("a second apply: %v", got)
	}
	if got, _ := (Env{StateDir: state, VMMUser: &vmmuser.User{Name: "microvm", UID: 999}}).TAPOwners(cfg, true); len(got) != 0 {
		t.Errorf("without a range: %v", got)
	}
}

// TestPrepareRefusesAnotherReleasesModules: a kernel whose modules
// directory is another release's, or has no modules.dep, is refused
// before anything is written for the VM, naming the paths.
func TestPrepareRefusesAnotherReleasesModules(t *testing.T) {
	mods, _ := filepath.Glob(filepath.Join(guest.DefaultKernelCache, "amd64", "*", "modules"))
	if len(mods) == 0 {
		t.Skip("no Debian kernel in the cache (scripts/fetch-kernel.sh)")
	}
	dir := t.TempDir()
	// An x86 bzImage header whose version string says another release.
	img := make([]byte, 0x400)
	copy(img[0x202:], "HdrS")
	img[0x20e], img[0x20f] = 0x00, 0x01 // 0x100 + 0x200
	copy(img[0x300:], "9.9.9-other (builder@host) #1")
	kernel := filepath.Join(dir, "vmlinuz")
	os.WriteFile(kernel, img, 0o644)
	for _, c := range []struct{ modules, want string }{
		{mods[len(mods)-1], "is release 9.9.9-other but the modules in " + mods[len(mods)-1]},
		{t.TempDir(), "run depmod"},
	} {
		cfg, err := config.Parse("t.yaml", []byte(`vms: { a: { index: 1, kernel: { path: `+kernel+`, modules: `+c.modules+` } } }`), config.Options{})
		if err != nil {
			t.Fatal(err)
		}
		st := t.TempDir()
		env := Env{StateDir: st, RunDir: filepath.Join(st, "run"), KernelCache: guest.DefaultKernelCache, InitDir: st}
		_, err = Prepare(context.Background(), env, cfg.VM("a"), nil)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "vms.a") {
			t.Errorf("modules %s: %v; want %q", c.modules, err, c.want)
		}
		if entries, _ := os.ReadDir(st); len(entries) != 0 {
			t.Errorf("modules %s: Prepare left %v in the state directory", c.modules, entries)
		}
	}
}

// An emulated guest's translation cache scales with its memory, within
// 64 to 256 MiB.
func TestTranslationCacheMiB(t *testing.T) {
	for mem, want := range map[config.Size]int{128 * config.MiB: 64, 1024 * config.MiB: 64, 2048 * config.MiB: 128, 8192 * config.MiB: 256} {
		if got := TranslationCacheMiB(mem); got != want {
			t.Errorf("TranslationCacheMiB(%s) = %d, want %d", mem, got, want)
		}
	}
}
