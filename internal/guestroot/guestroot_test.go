package guestroot

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"microvm.dev/microvm/internal/guest"
)

// write makes the file rel (with its parents) under dir.
func write(t *testing.T, dir, rel, body string, mode os.FileMode) {
	t.Helper()
	p := filepath.Join(dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
}

func link(t *testing.T, dir, rel, target string) {
	t.Helper()
	p := filepath.Join(dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The image's init is found where guest.Inits says, and its kind by where
// it leads: systemd (a link to it), busybox (an absolute link into the
// image, which resolves only in the root), an inittab init otherwise.
func TestFindAndKindOfInit(t *testing.T) {
	for _, c := range []struct {
		name   string
		make   func(t *testing.T, dir string)
		init   string
		kind   InitKind
		noInit bool
	}{
		{"systemd", func(t *testing.T, d string) {
			write(t, d, "lib/systemd/systemd", "", 0o755)
			link(t, d, "sbin/init", "../lib/systemd/systemd")
		}, "/sbin/init", Systemd, false},
		{"busybox", func(t *testing.T, d string) {
			write(t, d, "bin/busybox", "", 0o755)
			link(t, d, "sbin/init", "/bin/busybox")
		}, "/sbin/init", Busybox, false},
		{"sysvinit", func(t *testing.T, d string) { write(t, d, "sbin/init", "", 0o755) }, "/sbin/init", Sysv, false},
		{"systemd without /sbin/init", func(t *testing.T, d string) { write(t, d, "usr/lib/systemd/systemd", "", 0o755) }, "/usr/lib/systemd/systemd", Systemd, false},
		{"none", func(t *testing.T, d string) { write(t, d, "bin/sh", "", 0o755) }, "", 0, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			c.make(t, dir)
			r := Root(dir)
			init, err := r.FindInit()
			if c.noInit {
				if err == nil || !strings.Contains(err.Error(), "no /sbin/init") {
					t.Fatalf("FindInit = %q, %v; want an error", init, err)
				}
				return
			}
			if err != nil || init != c.init {
				t.Fatalf("FindInit = %q, %v; want %q", init, err, c.init)
			}
			if k := r.KindOfInit(init); k != c.kind {
				t.Errorf("KindOfInit = %d, want %d", k, c.kind)
			}
		})
	}
}

// For systemd, the root gets the agent's unit wanted by sysinit.target,
// the image's sshd masked, Ctrl-Alt-Del mapped to poweroff, kmod's static
// nodes skipped without kmod, the machine-id and the agent's spec; and,
// without udev in the image, the devices of sysfs announced in udev's
// database (not the loopback).
func TestPrepareSystemd(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "lib/systemd/systemd", "", 0o755)
	write(t, dir, "lib/systemd/system/poweroff.target", "", 0o644)
	link(t, dir, "sbin/init", "../lib/systemd/systemd")
	os.Mkdir(filepath.Join(dir, "etc"), 0o755)
	sys := t.TempDir()
	write(t, sys, "class/tty/console/active", "ttyS0\n", 0o644)
	write(t, sys, "class/tty/ttyS0/dev", "4:64\n", 0o644)
	write(t, sys, "class/block/vda/dev", "253:0\n", 0o644)
	write(t, sys, "class/net/eth0/ifindex", "2\n", 0o644)
	write(t, sys, "class/net/lo/ifindex", "1\n", 0o644)
	spec := &guest.Spec{Name: "vm1", MachineID: "0123456789abcdef0123456789abcdef", SSH: guest.SSHSpec{AuthorizedKeys: []string{"ssh-ed25519 AAAA k"}}}
	r := Root(dir)
	if err := r.PrepareImageInit(spec, "/sbin/init", sys); err != nil {
		t.Fatal(err)
	}
	units := filepath.Join(dir, "run/systemd/system")
	if unit := read(t, filepath.Join(units, "microvm-agent.service")); !strings.Contains(unit, "ExecStart=/run/microvm/init agent") || !strings.Contains(unit, "Before=sysinit.target") {
		t.Errorf("the agent's unit:\n%s", unit)
	}
	if l, err := os.Readlink(filepath.Join(units, "sysinit.target.wants/microvm-agent.service")); err != nil || l != "../microvm-agent.service" {
		t.Errorf("the agent is not wanted by sysinit.target: %q %v", l, err)
	}
	for _, u := range []string{"ssh.service", "ssh.socket", "sshd.service"} {
		if l, _ := os.Readlink(filepath.Join(units, u)); l != "/dev/null" {
			t.Errorf("%s is not masked: %q", u, l)
		}
	}
	if l, _ := os.Readlink(filepath.Join(units, "ctrl-alt-del.target")); l != "/lib/systemd/system/poweroff.target" {
		t.Errorf("ctrl-alt-del.target → %q", l)
	}
	if conf := read(t, filepath.Join(units, "kmod-static-nodes.service.d/microvm.conf")); !strings.Contains(conf, "ConditionPathExists=|/usr/bin/kmod") {
		t.Errorf("kmod-static-nodes drop-in:\n%s", conf)
	}
	if id := read(t, filepath.Join(dir, "etc/machine-id")); id != spec.MachineID+"\n" {
		t.Errorf("machine-id %q", id)
	}
	var agent AgentSpec
	if err := json.Unmarshal([]byte(read(t, filepath.Join(dir, AgentSpecPath))), &agent); err != nil || agent.Name != "vm1" || len(agent.SSH.AuthorizedKeys) != 1 {
		t.Errorf("the agent's spec: %+v %v", agent, err)
	}
	for _, id := range []string{"c4:64", "b253:0", "n2"} {
		if rec := read(t, filepath.Join(dir, "run/udev/data", id)); !strings.Contains(rec, "G:systemd\nQ:systemd\n") {
			t.Errorf("udev record of %s: %q", id, rec)
		}
		if _, err := os.Stat(filepath.Join(dir, "run/udev/tags/systemd", id)); err != nil {
			t.Errorf("%s is not tagged systemd: %v", id, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "run/udev/data/n1")); err == nil {
		t.Error("the loopback was announced")
	}

	// An image with udev announces its own devices.
	withUdev := t.TempDir()
	write(t, withUdev, "lib/systemd/systemd-udevd", "", 0o755)
	if err := Root(withUdev).AnnounceDevices(sys); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(withUdev, "run/udev")); err == nil {
		t.Error("devices announced in an image that has udev")
	}
}

// An inittab init gets the agent's respawn line and Ctrl-Alt-Del powering
// off: busybox without an inittab gets its built-in one written out
// first; sysvinit's own ctrlaltdel line is replaced, other lines kept.
func TestPrepareInittab(t *testing.T) {
	busybox := t.TempDir()
	write(t, busybox, "bin/busybox", "", 0o755)
	link(t, busybox, "sbin/init", "/bin/busybox")
	os.Mkdir(filepath.Join(busybox, "etc"), 0o755)
	if err := Root(busybox).PrepareImageInit(&guest.Spec{Name: "b"}, "/sbin/init", t.TempDir()); err != nil {
		t.Fatal(err)
	}
	got := read(t, filepath.Join(busybox, "etc/inittab"))
	for _, want := range []string{"::sysinit:/etc/init.d/rcS\n", "::respawn:/run/microvm/init agent\n", "::ctrlaltdel:/sbin/poweroff\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("busybox inittab lacks %q:\n%s", want, got)
		}
	}

	sysv := t.TempDir()
	write(t, sysv, "sbin/init", "", 0o755)
	write(t, sysv, "etc/inittab", "id:2:initdefault:\nca:12345:ctrlaltdel:/sbin/shutdown -t1 -a -r now\n# ca::ctrlaltdel:commented\n", 0o644)
	if err := Root(sysv).PrepareImageInit(&guest.Spec{Name: "s"}, "/sbin/init", t.TempDir()); err != nil {
		t.Fatal(err)
	}
	got = read(t, filepath.Join(sysv, "etc/inittab"))
	want := "id:2:initdefault:\nca::ctrlaltdel:/sbin/shutdown -t1 -h -P now\n# ca::ctrlaltdel:commented\n# added by microvm-init in the VM's memory layer\nmv:2345:respawn:/run/microvm/init agent\n"
	if got != want {
		t.Errorf("sysvinit inittab:\n%s\nwant:\n%s", got, want)
	}
	// Without an inittab, sysvinit cannot be readied.
	bare := t.TempDir()
	write(t, bare, "sbin/init", "", 0o755)
	os.Mkdir(filepath.Join(bare, "etc"), 0o755)
	if err := Root(bare).PrepareImageInit(&guest.Spec{Name: "x"}, "/sbin/init", t.TempDir()); err == nil {
		t.Error("a sysvinit image without /etc/inittab was readied")
	}
}

// Commands resolve in the root (an absolute link resolving only there),
// run chrooted in a session with a login's environment, sorted, in /root
// when there is one.
func TestCommand(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "bin/busybox", "", 0o755)
	link(t, dir, "bin/ls", "/bin/busybox")
	write(t, dir, "usr/bin/tool", "", 0o755)
	write(t, dir, "usr/bin/data", "", 0o644)
	r := Root(dir)
	for name, want := range map[string]string{"ls": "/bin/ls", "tool": "/usr/bin/tool", "data": "data", "missing": "missing", "/opt/x": "/opt/x"} {
		if got := r.LookPath(name); got != want {
			t.Errorf("LookPath(%q) = %q, want %q", name, got, want)
		}
	}
	cmd := r.Command([]string{"ls", "-l"}, map[string]string{"TERM": "xterm", "HOME": "/home/x"}, "")
	if cmd.Path != "/bin/ls" || cmd.Dir != "/" || cmd.SysProcAttr.Chroot != dir || !cmd.SysProcAttr.Setsid {
		t.Errorf("command %+v, %+v", cmd, cmd.SysProcAttr)
	}
	wantEnv := []string{"HOME=/home/x", "LOGNAME=root", "PATH=" + guest.DefaultPath, "SHELL=/bin/sh", "TERM=xterm", "USER=root"}
	if !reflect.DeepEqual(cmd.Env, wantEnv) {
		t.Errorf("env %q, want %q", cmd.Env, wantEnv)
	}
	os.Mkdir(filepath.Join(dir, "root"), 0o700)
	if cmd := r.Command([]string{"ls"}, nil, ""); cmd.Dir != "/root" {
		t.Errorf("dir %q, want /root", cmd.Dir)
	}
	if cmd := Root("").Command([]string{"ls"}, nil, "/tmp"); cmd.SysProcAttr.Chroot != "" || cmd.Dir != "/tmp" {
		t.Errorf("the agent's command chroots to %q in %q", cmd.SysProcAttr.Chroot, cmd.Dir)
	}
}

// A new volume is populated from the image's directory: contents, modes
// (setuid too), owners, times and links kept, the volume's root taking
// the directory's mode; a volume with data, or no directory in the
// image, is left alone.
func TestPopulate(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	write(t, src, "conf/app.conf", "key = 1\n", 0o640)
	write(t, src, "bin/helper", "#!/bin/sh\n", 0o755)
	os.Chmod(filepath.Join(src, "bin/helper"), 0o755|os.ModeSetuid)
	link(t, src, "current", "conf/app.conf")
	os.Chmod(src, 0o750)
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	os.Chtimes(filepath.Join(src, "conf/app.conf"), old, old)
	if os.Geteuid() == 0 {
		os.Lchown(filepath.Join(src, "conf/app.conf"), 1234, 5678)
	}
	os.Mkdir(filepath.Join(dst, "lost+found"), 0o700)
	n, err := Populate(src, dst)
	if err != nil || n != 6 { // ., conf, conf/app.conf, bin, bin/helper, current
		t.Fatalf("Populate = %d, %v", n, err)
	}
	if got := read(t, filepath.Join(dst, "conf/app.conf")); got != "key = 1\n" {
		t.Errorf("content %q", got)
	}
	fi, _ := os.Stat(filepath.Join(dst, "conf/app.conf"))
	if fi.Mode().Perm() != 0o640 || !fi.ModTime().Equal(old) {
		t.Errorf("app.conf: %v %v", fi.Mode(), fi.ModTime())
	}
	if os.Geteuid() == 0 {
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 1234 || st.Gid != 5678 {
			t.Errorf("app.conf owned by %d:%d", st.Uid, st.Gid)
		}
	}
	if fi, _ := os.Stat(filepath.Join(dst, "bin/helper")); fi.Mode()&os.ModeSetuid == 0 {
		t.Errorf("helper lost its setuid bit: %v", fi.Mode())
	}
	if l, _ := os.Readlink(filepath.Join(dst, "current")); l != "conf/app.conf" {
		t.Errorf("link → %q", l)
	}
	if fi, _ := os.Stat(dst); fi.Mode().Perm() != 0o750 {
		t.Errorf("the volume's root is %v, want the directory's 0750", fi.Mode().Perm())
	}
	// Populated once: now it has data, and a second run copies nothing.
	write(t, dst, "conf/app.conf.new", "mine", 0o644)
	if n, err := Populate(src, dst); n != 0 || err != nil {
		t.Errorf("a volume with data was populated again: %d %v", n, err)
	}
	if n, err := Populate(filepath.Join(src, "nothing-here"), t.TempDir()); n != 0 || err != nil {
		t.Errorf("no directory in the image: %d %v", n, err)
	}
}

// The identity files name the VM; secrets land with their modes and
// owners, and never through a symlink of the image.
func TestIdentityAndSecrets(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "etc/passwd", "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n", 0o644)
	write(t, dir, "etc/group", "root:x:0:\napp:x:1000:\n", 0o644)
	link(t, dir, "etc/resolv.conf", "../run/resolv.conf")
	r := Root(dir)
	spec := &guest.Spec{Name: "web", Net: guest.NetSpec{Address: "10.1.0.2/24", Address6: "fd00::2/64", DNS: []string{"10.1.0.1"}, Search: []string{"vms.internal"}}}
	if err := r.WriteIdentity(spec); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(dir, "etc/resolv.conf")); got != "nameserver 10.1.0.1\nsearch vms.internal\n" {
		t.Errorf("resolv.conf %q", got)
	}
	if fi, _ := os.Lstat(filepath.Join(dir, "etc/resolv.conf")); fi.Mode()&os.ModeSymlink != 0 {
		t.Error("resolv.conf written through the image's link")
	}
	if got := read(t, filepath.Join(dir, "etc/hosts")); !strings.Contains(got, "10.1.0.2\tweb\n") || !strings.Contains(got, "fd00::2\tweb\n") {
		t.Errorf("hosts %q", got)
	}
	if got := read(t, filepath.Join(dir, "etc/hostname")); got != "web\n" {
		t.Errorf("hostname %q", got)
	}

	if err := r.WriteSecrets([]guest.SecretFile{{Path: "/run/secrets/db/password", Mode: 0o400, Owner: "app", Data: []byte("s3cret")}}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "run/secrets/db/password"))
	if err != nil || fi.Mode().Perm() != 0o400 || read(t, filepath.Join(dir, "run/secrets/db/password")) != "s3cret" {
		t.Fatalf("the secret: %v %v", fi, err)
	}
	if os.Geteuid() == 0 {
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 1000 || st.Gid != 1000 {
			t.Errorf("the secret is owned by %d:%d, want app's", st.Uid, st.Gid)
		}
	}
	link(t, dir, "data", t.TempDir())
	if err := r.WriteSecrets([]guest.SecretFile{{Path: "/data/key", Mode: 0o400, Data: []byte("x")}}); err == nil || !strings.Contains(err.Error(), "/data is a symlink in the image") {
		t.Errorf("a secret through the image's symlink: %v", err)
	}
	if err := r.WriteSecrets([]guest.SecretFile{{Path: "/run/k", Mode: 0o400, Owner: "nobody-here", Data: []byte("x")}}); err == nil {
		t.Error("a secret for a user the image lacks was written")
	}
}

// TestWriteSecretsInTheRunningRoot: the root "" (a clone's watcher writes
// into the guest's own root) makes missing directories at their absolute
// path, not under the working directory.
func TestWriteSecretsInTheRunningRoot(t *testing.T) {
	target := filepath.Join(t.TempDir(), "secrets", "job")
	t.Chdir(t.TempDir())
	if err := Root("").WriteSecrets([]guest.SecretFile{{Path: target, Mode: 0o440, Data: []byte("token")}}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(target); err != nil || string(b) != "token" {
		t.Errorf("%s: %q %v", target, b, err)
	}
}
