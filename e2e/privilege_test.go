package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"microvm.dev/microvm/internal/apiserver"
	"microvm.dev/microvm/internal/hostnet"
	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/network"
	"microvm.dev/microvm/internal/testutil"
	"microvm.dev/microvm/internal/vmmuser"
)

// TestUnprivilegedHypervisor boots a VM whose QEMU runs as the microvm
// user (scripts/lib.sh creates it) with no capabilities (9p keeps only
// CAP_DAC_READ_SEARCH, to read an image's root-only files), an empty
// bounding set and no_new_privs, over each store share, and uses
// everything the hypervisor opens itself: TAP, volume, console, sockets.
func TestUnprivilegedHypervisor(t *testing.T) {
	requireGuestEnv(t)
	u, err := vmmuser.Lookup(vmmuser.DefaultName, apiserver.SocketGroup)
	if err != nil || u == nil {
		t.Fatalf("the %s user is needed (scripts/lib.sh creates it): %v", vmmuser.DefaultName, err)
	}
	// An image with a file only root may read.
	image := filepath.Join(shared.dir, "store", "private")
	if _, err := os.Stat(image); err != nil {
		if out, err := exec.Command("cp", "-a", filepath.Join(shared.dir, "store", "base"), image+".tmp").CombinedOutput(); err != nil {
			t.Fatalf("copy the base image: %v\n%s", err, out)
		}
		if err := os.WriteFile(filepath.Join(image+".tmp", "etc", "rootonly"), []byte("for root's eyes\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(image+".tmp", image); err != nil {
			t.Fatal(err)
		}
	}
	shares := []string{"9p"}
	if launch.Virtiofsd() != "" {
		shares = append(shares, "virtiofs")
	}
	for _, share := range shares {
		t.Run(share, func(t *testing.T) {
			src := `vms: { vm1: { index: 1, memory: 512M, image: private,
  volumes: [ { name: data, mountPoint: /mnt/storage, size: 1G } ] } }`
			ns, cfg := netLab(t, "up"+share[:2], src)
			env := newEnv(t, ns)
			env.Share, env.VMMUser = share, u

			// The test's state directory sits under a directory only root
			// may pass through: refused, naming it.
			_, err := launch.Prepare(context.Background(), env, cfg.VM("vm1"), nil)
			parent := filepath.Dir(env.StateDir)
			if err == nil || !strings.Contains(err.Error(), "cannot pass through "+parent) {
				t.Fatalf("Prepare under a 0700 directory: %v, want an error naming %s", err, parent)
			}
			if err := os.Chmod(parent, 0o711); err != nil {
				t.Fatal(err)
			}
			// The lab's TAP was made for root: an idle TAP is made again for
			// the hypervisor's user.
			m, err := network.New(ns.Path, hostnet.Options{TAPOwner: env.TAPOwner()})
			if err != nil {
				t.Fatal(err)
			}
			res, err := m.Apply(cfg)
			m.Close()
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(fmt.Sprint(res), "vm-vm1") {
				t.Errorf("the TAP owned by root was not made again for %s: %+v", u.Name, res)
			}

			p, r := boot(t, env, cfg.VM("vm1"))
			status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", r.Process.Pid))
			if err != nil {
				t.Fatal(err)
			}
			caps := "0000000000000000"
			if share == "9p" {
				caps = "0000000000000004" // CAP_DAC_READ_SEARCH alone
			}
			uid := fmt.Sprint(u.UID)
			for _, want := range []string{
				"Uid:\t" + uid + "\t" + uid + "\t" + uid + "\t" + uid,
				"CapEff:\t" + caps, "CapPrm:\t" + caps, "CapBnd:\t" + caps,
				"NoNewPrivs:\t1", "Seccomp:\t2",
			} {
				if !strings.Contains(string(status), want+"\n") {
					t.Errorf("the hypervisor's status lacks %q:\n%s", want, status)
				}
			}
			if !regexp.MustCompile(`(?m)^Groups:\s*$`).Match(status) && len(u.Groups) == 0 {
				t.Errorf("the hypervisor kept supplementary groups:\n%s", status)
			}
			c := sshTo(t, ns, p)
			if got := run(t, c, "cat /etc/rootonly"); got != "for root's eyes" {
				t.Errorf("root-only image file read as %q", got)
			}
			run(t, c, "echo kept > /mnt/storage/f && sync")
			stop(t, r)
			if fi, err := os.Stat(p.Launch.Disks[0].Path); err != nil || fi.Sys() == nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("debugfs", "-R", "cat /f", p.Launch.Disks[0].Path).Output(); err != nil || strings.TrimSpace(string(out)) != "kept" {
				t.Errorf("the volume does not hold what the guest wrote: %q %v", out, err)
			}
		})
	}
	testutil.Report(t, testutil.FaultResult{Fault: "a hypervisor's privileges: QEMU run as the microvm user (9p and virtiofs stores)", Trials: len(shares),
		Result: "uid " + fmt.Sprint(u.UID) + ", no capabilities (9p: CAP_DAC_READ_SEARCH alone), empty bounding set, no_new_privs, seccomp; boots, reads a root-only image file, writes its volume; a state directory it cannot reach is refused by name"})
}
