package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"microvm.dev/microvm/internal/store"
	"microvm.dev/microvm/internal/testutil"
)

// TestKernelModulesInTheGuest: every VM has its kernel's own module tree at
// /lib/modules/$(uname -r), read-only, whatever its image and store kind.
// In busybox's root (a block store, then a 9p share with the image's own
// modules for another kernel, which stay beside it) busybox's modprobe
// loads a module with its dependencies and a missing module gets
// modprobe's own error. In Debian's root (the host's share, virtiofs where
// a virtiofsd is installed; merged /usr, no kmod at all) the kernel itself
// loads the
// module `ip link add wg0 type wireguard` needs, through microvm-init as
// its modprobe, as a WireGuard application image would under init:
// microvm.
func TestKernelModulesInTheGuest(t *testing.T) {
	requireGuestEnv(t)
	root := debianRoot(t, "iproute2")
	ns, cfg := netLab(t, "kmod", `defaults: { memory: 384M }
vms:
  bb: { index: 1, store: block }
  bb9p: { index: 3, store: 9p, image: base-othermods }
  wg: { index: 2, image: debian-iproute2 }
`)
	env := newEnv(t, ns)
	if _, err := store.Open(env.StateDir).Import(context.Background(), "debian-iproute2", root, store.Options{}); err != nil {
		t.Fatal(err)
	}
	// The base image with modules of its own for another kernel.
	other := t.TempDir()
	testutil.MustRun(t, "cp", "-a", filepath.Join(shared.dir, "store", "base")+"/.", other)
	os.MkdirAll(filepath.Join(other, "lib/modules/5.10.0-other"), 0o755)
	os.WriteFile(filepath.Join(other, "lib/modules/5.10.0-other/modules.dep"), []byte("kernel/x.ko:\n"), 0o644)
	if _, err := store.Open(env.StateDir).Import(context.Background(), "base-othermods", other, store.Options{}); err != nil {
		t.Fatal(err)
	}

	for _, name := range []string{"bb", "bb9p"} {
		p, r := boot(t, env, cfg.VM(name))
		c := sshTo(t, ns, p)
		rel := run(t, c, "uname -r")
		if out := run(t, c, "test -f /lib/modules/$(uname -r)/modules.dep && awk '$2 == \"/lib/modules/"+rel+"\" {print $4}' /proc/mounts | cut -d, -f1"); out != "ro" {
			t.Errorf("%s: /lib/modules/%s is not the kernel's tree, mounted read-only: %q", name, rel, out)
		}
		if out := run(t, c, "modprobe br_netfilter && grep -o '^br_netfilter\\|^bridge' /proc/modules | sort | tr '\\n' ' '"); out != "br_netfilter bridge" {
			t.Errorf("%s: busybox's modprobe br_netfilter: %q, want it and its dependency bridge loaded", name, out)
		}
		if out, err := runErr(c, "modprobe no-such-module"); err == nil || !strings.Contains(out, "no-such-module") {
			t.Errorf("%s: a module that does not exist: %v %q, want modprobe's own error", name, err, out)
		}
		if name == "bb9p" {
			if out := run(t, c, "ls /lib/modules | sort | tr '\\n' ' '"); out != "5.10.0-other "+rel {
				t.Errorf("the image's own modules for another kernel beside the running kernel's: %q", out)
			}
		}
		stop(t, r)
	}

	p, r := boot(t, env, cfg.VM("wg"))
	c := sshTo(t, ns, p)
	if out := run(t, c, "test -x /sbin/modprobe || echo no-kmod; readlink /lib; test -f /usr/lib/modules/$(uname -r)/modules.dep && echo tree"); out != "no-kmod\nusr/lib\ntree" {
		t.Errorf("Debian's root: %q, want no kmod, merged /usr and the tree under /usr/lib/modules", out)
	}
	out, err := runErr(c, "ip link add wg0 type wireguard && ip -d link show wg0")
	if err != nil || !strings.Contains(out, "wireguard") {
		t.Errorf("ip link add wg0 type wireguard: %v\n%s", err, out)
	}
	if out := run(t, c, "grep -c '^wireguard ' /proc/modules"); out != "1" {
		t.Errorf("wireguard loaded: %q", out)
	}
	// A kind no module provides: the kernel's modprobe says so at once and
	// ip reports it; nothing hangs.
	t0 := time.Now()
	if out, err := runErr(c, "ip link add x0 type nosuchkind"); err == nil || !strings.Contains(out, "Unknown device type") || time.Since(t0) > 20*time.Second {
		t.Errorf("ip link add x0 type nosuchkind: %v after %s\n%s", err, time.Since(t0).Round(time.Millisecond), out)
	}
	stop(t, r)
}
