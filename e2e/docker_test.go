package e2e

import (
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/testutil"
)

// vm1Packages and vm1Hook make the reference setup's VM1 from Debian's own
// packages: systemd with udev, AppArmor, Docker (docker.io) with iptables
// and kmod, and the reference's docker-sandbox.service running the
// sandbox container with `docker run --pull missing -p 8080:8080`,
// pulled from the registry beyond the host's uplink (plain HTTP there,
// hence insecure-registries). The hook runs on the finished root
// (mmdebstrap's customize hook); the image is cached by both.
const (
	vm1Registry = "203.0.113.2:5000"
	vm1Packages = "systemd-sysv,udev,dbus,apparmor,docker.io,iptables,kmod,procps"
	vm1Hook     = `set -e
mkdir -p "$1/etc/docker" "$1/etc/systemd/system/multi-user.target.wants"
echo '{"insecure-registries": ["203.0.113.2:5000"]}' > "$1/etc/docker/daemon.json"
cat > "$1/etc/systemd/system/docker-sandbox.service" <<'UNIT'
[Unit]
Description=Docker sandbox (the reference setup's VM1)
Requires=docker.service
After=docker.service
[Service]
ExecStartPre=-/usr/bin/docker rm -f sandbox
ExecStart=/usr/bin/docker run --rm --name sandbox --pull missing -p 8080:8080 203.0.113.2:5000/sandbox:latest
ExecStop=/usr/bin/docker stop sandbox
Restart=always
RestartSec=2
[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/docker-sandbox.service "$1/etc/systemd/system/multi-user.target.wants/docker-sandbox.service"`
)

// TestReferenceVM1Docker runs the reference setup's VM1 as its users run
// it: a Debian machine (init: image) whose systemd starts Docker with its
// data on the VM's volume at /var/lib/docker, and a unit that runs the
// sandbox container, which Docker pulls from Debian's docker-registry
// beyond the host's uplink, through the VM's NAT. Docker starts (its
// bridge, br_netfilter and nftables modules loaded from the kernel's own
// tree), the container answers on the VM's 8080 from the host, its output
// is in the VM's journal (microvm exec … journalctl), and after microvm
// restart the image is still on the volume: the registry is not asked
// again, and the service answers again.
func TestReferenceVM1Docker(t *testing.T) {
	requireGuestEnv(t)
	root := debianRootWith(t, vm1Packages, vm1Hook)
	l := newDaemonLab(t, "vm1")
	inet := testutil.NewNetns(t, "vm1i")
	plugUplink(t, l.ns, inet)

	// The registry runs on loopback; the "internet" reaches it at
	// 203.0.113.2:5000 through a forwarder listening in that namespace,
	// which counts the connections Docker opens.
	reg := startRegistry(t)
	var pulls atomic.Int64
	forwardInto(t, inet, vm1Registry, reg.addr, &pulls)
	base := baseLayer(t)
	reg.push(t, "sandbox:latest", v1.Config{Cmd: []string{"/bin/sh", "-c",
		"echo sandbox started; mkdir -p /www && echo hello from the sandbox > /www/index.html && exec httpd -f -v -p 8080 -h /www"}}, base)

	if out, err := l.cli("image", "import", "debian-docker", root); err != nil {
		t.Fatalf("image import: %v\n%s", err, out)
	}
	file := l.writeFile(`vms:
  vm1:
    index: 1
    vcpu: 2
    memory: 1G
    image: debian-docker
    init: image
    ports: [8080]
    stopTimeout: 90s
    volumes: [{ name: docker, mountPoint: /var/lib/docker, size: 4G }]
`)
	t0 := time.Now()
	l.startDaemon(file)
	vms := l.waitFor("vm1 running", 6*time.Minute, allRunning("vm1"))
	t.Logf("vm1 running in %s: %q", time.Since(t0).Round(time.Second), vms["vm1"].Readiness)
	if r := vms["vm1"].Readiness; r != "running" {
		out, _ := l.cli("exec", "vm1", "--", "sh", "-c", "systemctl --failed --no-pager; journalctl -b --no-pager -p warning | tail -40")
		t.Errorf("vm1 came up %q:\n%s", r, out)
	}
	page := waitHTTP(t, l.ns, "10.1.0.2:8080", 3*time.Minute)
	if !strings.Contains(page, "hello from the sandbox") {
		t.Errorf("the sandbox on vm1:8080 answers %q", page)
	}
	first := pulls.Load()
	if first == 0 {
		t.Error("Docker did not pull from the registry")
	}
	if out, err := l.cli("exec", "vm1", "--", "docker", "inspect", "--format", "{{.AppArmorProfile}}", "sandbox"); err != nil || strings.TrimSpace(out) != "docker-default" {
		t.Errorf("the container's AppArmor profile: %v %q, want docker-default", err, out)
	}
	if out, err := l.cli("exec", "vm1", "--", "journalctl", "-u", "docker-sandbox", "--no-pager"); err != nil || !strings.Contains(out, "sandbox started") {
		t.Errorf("journalctl -u docker-sandbox: %v\n%s", err, out)
	}
	out, err := l.cli("exec", "vm1", "--", "sh", "-c", "findmnt -no FSTYPE /var/lib/docker; docker info --format '{{.Driver}} {{.DockerRootDir}}'; lsmod | grep -c '^br_netfilter\\|^bridge\\|^nf_tables'")
	if err != nil || !strings.Contains(out, "ext4\noverlay2 /var/lib/docker\n3") {
		t.Errorf("Docker's data on the volume, its modules loaded: %v\n%s", err, out)
	}

	t1 := time.Now()
	if out, err := l.cli("restart", "vm1"); err != nil {
		t.Fatalf("restart: %v\n%s", err, out)
	}
	l.waitFor("vm1 running again", 6*time.Minute, func(m map[string]apitypes.VMStatus) bool {
		return allRunning("vm1")(m) && m["vm1"].PID != vms["vm1"].PID
	})
	if page := waitHTTP(t, l.ns, "10.1.0.2:8080", 3*time.Minute); !strings.Contains(page, "hello from the sandbox") {
		t.Errorf("after the restart the sandbox answers %q", page)
	}
	t.Logf("restarted and answering in %s", time.Since(t1).Round(time.Second))
	if n := pulls.Load(); n != first {
		t.Errorf("after the restart Docker asked the registry again (%d connections, %d before): the image did not stay on the volume", n, first)
	}
	if out, err := l.cli("exec", "vm1", "--", "docker", "images", "--format", "{{.Repository}}:{{.Tag}}"); err != nil || !strings.Contains(out, vm1Registry+"/sandbox:latest") {
		t.Errorf("docker images after the restart: %v\n%s", err, out)
	}
}

// debianRootWith is debianRoot with a customize hook run on the root.
func debianRootWith(t *testing.T, packages, hook string) string {
	t.Helper()
	t.Setenv("HOOK", hook)
	return debianRoot(t, packages)
}

// forwardInto listens on addr inside ns and relays each connection to
// target (on this namespace's loopback), counting them.
func forwardInto(t *testing.T, ns *testutil.Netns, addr, target string, count *atomic.Int64) {
	t.Helper()
	ln := ns.Listen(t, addr)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			count.Add(1)
			go func() {
				defer c.Close()
				up, err := net.DialTimeout("tcp", target, 5*time.Second)
				if err != nil {
					return
				}
				defer up.Close()
				go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite() }()
				io.Copy(c, up)
			}()
		}
	}()
}

// waitHTTP GETs http://addr/ from ns until it answers, for up to timeout.
func waitHTTP(t *testing.T, ns interface{ Do(testing.TB, func()) }, addr string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var out []byte
		var err error
		ns.Do(t, func() {
			var c net.Conn
			if c, err = net.DialTimeout("tcp", addr, 2*time.Second); err != nil {
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, "GET / HTTP/1.0\r\nHost: vm\r\n\r\n")
			out, err = io.ReadAll(c)
		})
		if err == nil && len(out) > 0 {
			return string(out)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET http://%s/ within %s: %v", addr, timeout, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}
