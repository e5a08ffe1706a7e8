package e2e

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"microvm.dev/microvm/internal/cgroup"
	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/volume"
)

const bootConfig = `
host: { externalInterface: auto }
vms:
  vm1:
    index: 1
    vcpu: 2
    memory: 1G
    volumes:
      - { name: data, mountPoint: /mnt/storage, size: 1G }
    command: ["id -u > /tmp/wl-uid; echo $GREETING > /tmp/wl-env; pwd > /tmp/wl-pwd; exec sleep 100000"]
    env: { GREETING: hello }
    workdir: /tmp
    user: nobody
`

// TestBootVolumeSurvivesReboot boots a VM under QEMU, checks it over SSH,
// shuts it down cleanly and boots it again: the data volume keeps its file,
// /var does not.
func TestBootVolumeSurvivesReboot(t *testing.T) {
	requireGuestEnv(t)
	ns, cfg := netLab(t, "boot", bootConfig)
	env := newEnv(t, ns)
	vm := cfg.VM("vm1")
	token := randomToken(t)

	// First boot.
	p, r := boot(t, env, vm)
	if res, err := launch.Command(env, vm); err != nil {
		t.Errorf("render runner: %v", err)
	} else if strings.Join(res.Command.Argv, " ") != strings.Join(p.Argv, " ") {
		t.Errorf("render runner would print %v, but the VM was started with %v", res.Command.Argv, p.Argv)
	}
	if p.Volumes["data"] != volume.Created {
		t.Errorf("first boot: volume %s, want created", p.Volumes["data"])
	}
	c := sshTo(t, ns, p)
	if got := run(t, c, "hostname"); got != "vm1" {
		t.Errorf("hostname = %q", got)
	}
	if got := run(t, c, "ip -4 addr show eth0"); !strings.Contains(got, "inet 10.1.0.2/24") {
		t.Errorf("address:\n%s", got)
	}
	if got := run(t, c, "ip route"); !strings.Contains(got, "default via 10.1.0.1") {
		t.Errorf("route:\n%s", got)
	}
	// The workload runs as the configured user, with its env and workdir.
	if got := run(t, c, "sleep 0.5; cat /tmp/wl-uid /tmp/wl-env /tmp/wl-pwd"); got != "65534\nhello\n/tmp" {
		t.Errorf("workload wrote %q, want uid 65534, hello, /tmp", got)
	}
	if got := run(t, c, "nproc"); got != "2" {
		t.Errorf("nproc = %q, want 2", got)
	}
	memKB, _ := strconv.Atoi(strings.Fields(run(t, c, "grep MemTotal /proc/meminfo"))[1])
	if memKB < 900_000 || memKB > 1_048_576 {
		t.Errorf("MemTotal = %d kB, want about 1 GiB", memKB)
	}
	mounts := run(t, c, "cat /proc/mounts")
	for _, want := range []string{" /mnt/storage ext4 ", " / overlay ", " /run/microvm/store ", " /sys/fs/cgroup cgroup2 ", " /dev/mqueue mqueue "} {
		if !strings.Contains(mounts, want) {
			t.Errorf("mounts lack %q:\n%s", want, mounts)
		}
	}
	if out, err := runErr(c, "touch /run/microvm/store/x"); err == nil || !strings.Contains(out, "Read-only") {
		t.Errorf("writing to the store: %v %q, want a read-only error", err, out)
	}
	run(t, c, "echo "+token+" > /mnt/storage/keep && echo gone > /var/gone && sync")
	var exit *ssh.ExitError
	if _, err := runErr(c, "exit 7"); !errors.As(err, &exit) || exit.ExitStatus() != 7 {
		t.Errorf("exit status: %v, want 7", err)
	}
	checkSFTP(t, c)
	stop(t, r)
	state := dumpe2fs(t, volume.Path(env.StateDir+"/vms/vm1", "data"))
	if !strings.Contains(state, "Filesystem state:         clean") || strings.Contains(state, "needs_recovery") {
		t.Errorf("the volume was not left clean:\n%s", state)
	}

	// Second boot: the volume keeps its file, /var starts empty.
	p, r = boot(t, env, vm)
	if p.Volumes["data"] != volume.Kept || !p.BaseCached {
		t.Errorf("second boot: volume %s (want kept), base cached %v (want true)", p.Volumes["data"], p.BaseCached)
	}
	c = sshTo(t, ns, p)
	if got := run(t, c, "cat /mnt/storage/keep"); got != token {
		t.Errorf("the volume lost its file: %q, want %q", got, token)
	}
	if out, err := runErr(c, "cat /var/gone"); err == nil {
		t.Errorf("/var kept a file across reboots: %q", out)
	}
	stop(t, r)
}

// TestStoreShares boots a VM once per share type and checks the store is
// read-only in the guest and on the host side: even after the guest remounts
// it read-write, nothing reaches the host's tree. The block share is the one
// Firecracker uses (a read-only ext4 image of the tree); booting it under
// QEMU checks the guest side of that path for real. That boot also caps the
// hypervisor with cgroup limits.
func TestStoreShares(t *testing.T) {
	requireGuestEnv(t)
	types := []string{"9p", "block"}
	if launch.Virtiofsd() != "" {
		types = append(types, "virtiofs")
	} else {
		t.Log("no virtiofsd on this host: only 9p is tested")
	}
	for _, share := range types {
		t.Run(share, func(t *testing.T) {
			src := "vms: { vm1: { index: 1, memory: 512M } }"
			fstype := share
			if share == "block" {
				src = "vms: { vm1: { index: 1, memory: 512M, limits: { cpuWeight: 50, cpus: 1.5, memory: 1536M } } }"
				fstype = "ext4"
			}
			ns, cfg := netLab(t, "sh"+share[:2], src)
			env := newEnv(t, ns)
			env.Share = share
			var cg *cgroup.Manager
			if share == "block" {
				var err error
				if cg, err = cgroup.Detect(cgroup.DefaultRoot); err != nil {
					t.Fatalf("this host has no usable cgroups: %v", err)
				}
				env.Cgroups = cg
			}
			p, r := boot(t, env, cfg.VM("vm1"))
			if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", r.Process.Pid)); !strings.Contains(string(st), "Seccomp:\t2") {
				t.Error("QEMU does not run under its seccomp sandbox (-sandbox on)")
			}
			if cg != nil && !cg.Contains("vm1", r.Process.Pid) {
				t.Errorf("the hypervisor (pid %d) is not in its cgroup %v", r.Process.Pid, cg.Dirs("vm1"))
			}
			var blockSum string
			if blk := p.Launch.Shares[0].Block; blk != "" {
				blockSum = fileSum(t, blk)
			}
			c := sshTo(t, ns, p)
			fields := strings.Fields(run(t, c, "grep ' /run/microvm/store ' /proc/mounts"))
			if len(fields) < 4 || fields[2] != fstype || !strings.HasPrefix(fields[3], "ro") {
				t.Errorf("store mount = %v, want %s read-only", fields, fstype)
			}
			// The root is the image with a writable tmpfs layer on top.
			run(t, c, "echo mine > /etc/motd && test -f /bin/busybox")
			run(t, c, "mount -o remount,rw /run/microvm/store || true")
			out, err := runErr(c, "echo evil > /run/microvm/store/evil")
			if err == nil {
				t.Errorf("the guest wrote to the store after remounting it: %q", out)
			}
			stop(t, r)
			if blockSum != "" && fileSum(t, p.Launch.Shares[0].Block) != blockSum {
				t.Error("the store's disk image changed on the host")
			}
			if cg != nil {
				for _, d := range cg.Dirs("vm1") {
					if _, err := os.Stat(d); !os.IsNotExist(err) {
						t.Errorf("cgroup %s is left after the VM stopped", d)
					}
				}
			}
			imageDir := filepath.Join(env.StateDir, "store", "base")
			for _, f := range []string{"evil", "etc/motd"} {
				if _, err := os.Stat(filepath.Join(imageDir, f)); err == nil {
					t.Errorf("%s reached the host's image tree", f)
				}
			}
		})
	}
}

func boot(t *testing.T, env launch.Env, vm *config.VM) (*launch.Prepared, *launch.Running) {
	t.Helper()
	p, err := launch.Prepare(context.Background(), env, vm, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := launch.Start(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Process.Kill() })
	ready, err := r.WaitReady(3*time.Minute, nil)
	if err != nil {
		vmmLog, _ := os.ReadFile(p.Layout().VMMLog())
		t.Fatalf("%v\nhypervisor's log:\n%s", err, vmmLog)
	}
	t.Logf("%s ready %s after start (guest uptime %ss)", vm.Name, time.Since(r.Started).Round(time.Millisecond), ready.GuestUptime)
	return p, r
}

func stop(t *testing.T, r *launch.Running) {
	t.Helper()
	t0 := time.Now()
	if err := r.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d > 20*time.Second {
		t.Errorf("clean shutdown took %s: the guest ignored the power button and Ctrl-Alt-Del", d)
	}
}

func checkSFTP(t *testing.T, c *ssh.Client) {
	t.Helper()
	sc, err := sftp.NewClient(c)
	if err != nil {
		t.Fatalf("sftp: %v", err)
	}
	defer sc.Close()
	f, err := sc.Create("/root/sftp.txt")
	if err != nil {
		t.Fatalf("sftp create: %v", err)
	}
	io.WriteString(f, "via sftp")
	f.Close()
	if got := run(t, c, "cat /root/sftp.txt"); got != "via sftp" {
		t.Errorf("sftp upload reads back %q", got)
	}
}

func dumpe2fs(t *testing.T, img string) string {
	t.Helper()
	out, err := exec.Command("dumpe2fs", "-h", img).CombinedOutput()
	if err != nil {
		t.Fatalf("dumpe2fs: %v\n%s", err, out)
	}
	return string(out)
}

func randomToken(t *testing.T) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}
