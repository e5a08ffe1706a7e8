package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"microvm.dev/microvm/internal/store"
)

// TestImageInitMachines boots Debian machines made from Debian's own
// packages with their own init (init: image), as a real machine would
// run: systemd (with dbus and nginx's unit) and sysvinit (with nginx's
// init script). Each reaches its normal target with the network, hostname,
// DNS and volume declared; the VM's sshKeys log in as root on port 22; the
// machine-id is stable across boots; the ready report says how the init
// came up (systemd without udev: running, the console's getty not waiting
// for a device); and stop is the image's own clean poweroff (not a reboot),
// leaving the volume clean.
func TestImageInitMachines(t *testing.T) {
	requireGuestEnv(t)
	for _, c := range []struct {
		name, packages, comm string
		reboot               bool // boot again: the machine-id and the volume's file stay
	}{
		// systemd under TCG takes about a minute to boot: booted once.
		{"systemd", "systemd-sysv,dbus,nginx-light,procps", "systemd", false},
		{"sysvinit", "sysvinit-core,nginx-light,procps", "init", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := debianRoot(t, c.packages)
			pub, priv, _ := ed25519.GenerateKey(rand.Reader)
			sshPub, _ := ssh.NewPublicKey(pub)
			signer, _ := ssh.NewSignerFromKey(priv)
			image := "debian-" + c.name
			ns, cfg := netLab(t, "m"+c.name[:3], fmt.Sprintf(`vms:
  box:
    index: 1
    memory: 768M
    image: %s
    init: image
    stopTimeout: 60s
    sshKeys: [%q]
    volumes: [{ name: data, mountPoint: /srv/data, size: 64M }]
`, image, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub)))))
			env := newEnv(t, ns)
			if _, err := store.Open(env.StateDir).Import(context.Background(), image, root, store.Options{}); err != nil {
				t.Fatal(err)
			}
			vm := cfg.VM("box")
			p, r := boot(t, env, vm)
			ready := r.Ready
			if ready.State != "running" && ready.State != "degraded" {
				t.Fatalf("the ready report: %q (state %q)", ready.Line, ready.State)
			}
			// Without udev in the image, the devices present at boot are
			// announced as udev's coldplug would: nothing waits for one.
			if c.name == "systemd" && ready.State != "running" {
				t.Errorf("systemd without udev came up %q: %s", ready.State, ready.Line)
			}
			t.Logf("ready: %s", ready.Line)
			c2 := sshWith(t, ns, p, signer)
			facts := run(t, c2, "cat /proc/1/comm; hostname; cat /etc/machine-id; grep -c nameserver /etc/resolv.conf; awk '$2 == \"/srv/data\" {print $3}' /proc/mounts; pgrep -c nginx >/dev/null && echo nginx-up")
			lines := strings.Split(facts, "\n")
			if len(lines) < 6 || lines[0] != c.comm || lines[1] != "box" || len(lines[2]) != 32 || lines[4] != "ext4" || lines[5] != "nginx-up" {
				t.Errorf("the machine as its init sees it (init, hostname, machine-id, resolvers, volume, nginx):\n%s", facts)
			}
			if got := httpGet(t, ns, net.JoinHostPort("10.1.0.2", "80")); !strings.Contains(got, "Welcome to nginx") {
				t.Errorf("nginx, started by the image's init, answers %q", got)
			}
			if c.name == "systemd" {
				if out := run(t, c2, "systemctl is-active nginx dbus microvm-agent serial-getty@ttyS0"); out != "active\nactive\nactive\nactive" {
					t.Errorf("units: %q", out)
				}
			}
			run(t, c2, "echo kept > /srv/data/file && sync")
			machineID := lines[2]
			t0 := time.Now()
			stop(t, r)
			console, _ := os.ReadFile(p.Launch.ConsoleLog)
			if strings.Contains(string(console), "reboot: Restarting system") || !strings.Contains(string(console), "reboot: Power down") {
				t.Errorf("the stop was not a poweroff (%s):\n%s", time.Since(t0).Round(time.Millisecond), tail(string(console), 25))
			}
			if out := dumpe2fs(t, p.Launch.Disks[0].Path); !strings.Contains(out, "Filesystem state:         clean") {
				t.Errorf("the volume is not clean after the poweroff:\n%s", out)
			}
			t.Logf("clean poweroff in %s", time.Since(t0).Round(time.Millisecond))
			if !c.reboot {
				return
			}
			p, r = boot(t, env, vm)
			c3 := sshWith(t, ns, p, signer)
			if out := run(t, c3, "cat /etc/machine-id /srv/data/file"); out != machineID+"\nkept" {
				t.Errorf("after a reboot: %q, want the same machine-id and the volume's file", out)
			}
			stop(t, r)
		})
	}
}
