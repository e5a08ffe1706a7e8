package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/testutil"
	"microvm.dev/microvm/internal/vmm"
	"microvm.dev/microvm/internal/volume"
)

// TestAarch64GuestBoots boots an aarch64 guest under qemu-system-aarch64
// (TCG) with Debian's arm64 kernel, an arm64 microvm-init and an arm64 base
// image, checks it over SSH and shuts it down cleanly. It is skipped, saying
// why, when the arm64 kernel or busybox cannot be had (scripts/test.sh
// fetches them; an unreachable archive is the only reason to skip).
func TestAarch64GuestBoots(t *testing.T) {
	requireGuestEnv(t)
	if runtime.GOARCH != "amd64" {
		t.Skip("the foreign-architecture test runs on x86_64 hosts")
	}
	testutil.RequireCommand(t, "qemu-system-aarch64")
	if _, err := guest.ResolveKernel(config.Kernel{}, vmm.ArchAArch64, vmm.HostArch(), guest.DefaultKernelCache); err != nil {
		t.Skipf("no arm64 kernel (scripts/fetch-kernel.sh arm64 could not fetch it): %v", err)
	}
	store := filepath.Join(shared.dir, "store-arm64")
	if out, err := exec.Command("bash", "../scripts/build-base-image.sh", filepath.Join(store, "base"), "arm64").CombinedOutput(); err != nil {
		t.Skipf("no arm64 base image (busybox-static:arm64 unreachable?): %v\n%s", err, out)
	}
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-ldflags=-s -w",
		"-o", filepath.Join(shared.initDir, "microvm-init."+vmm.ArchAArch64), "microvm.dev/microvm/cmd/microvm-init")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOARCH=arm64")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the arm64 microvm-init: %v\n%s", err, out)
	}

	ns, cfg := netLab(t, "arm", bootConfig)
	env := newEnvStore(t, ns, "store-arm64")
	env.Arch = vmm.ArchAArch64
	p, r := boot(t, env, cfg.VM("vm1"))
	if p.Argv[3] != "qemu-system-aarch64" { // after "nsenter --net=… --"
		t.Errorf("started %v", p.Argv[:4])
	}
	c := sshTo(t, ns, p)
	if got := run(t, c, "uname -m"); got != "aarch64" {
		t.Errorf("uname -m = %q", got)
	}
	if got := run(t, c, "grep ' /mnt/storage ' /proc/mounts"); !strings.Contains(got, "ext4") {
		t.Errorf("volume not mounted: %q", got)
	}
	run(t, c, "echo arm > /mnt/storage/f && sync")
	stop(t, r)
	if st := dumpe2fs(t, volume.Path(env.StateDir+"/vms/vm1", "data")); strings.Contains(st, "needs_recovery") {
		t.Errorf("the volume was not left clean:\n%s", st)
	}
}
