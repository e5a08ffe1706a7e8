package cloudhypervisor

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/testutil"
	"microvm.dev/microvm/internal/vmm"
)

// cloud-hypervisor cannot be installed on this machine (no package, no
// /dev/kvm), so these tests check the command line against a recorded
// golden file and the API calls against a fake API server.

const src = `
vms:
  vm1:
    index: 1
    vcpu: 2
    memory: 1G
    kernelParams: [apparmor=0, mitigations=off]
    hypervisor: cloud-hypervisor
    volumes:
      - { name: data, mountPoint: /mnt/storage, size: 64G }
`

func launch(t *testing.T, share string) (*config.VM, vmm.Launch) {
	t.Helper()
	cfg, err := config.Parse("t.yaml", []byte(src), config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	vm := cfg.VM("vm1")
	l := vmm.Layout{StateDir: "/var/lib/microvm", RunDir: "/run/microvm", VM: vm.Name}.Launch(vm, Backend{}.Capabilities())
	l.Shares = []vmm.Share{{Tag: "store", Path: "/var/lib/microvm/store"}}
	l.Modules = "/var/lib/microvm/cache/modules/4567cdef.ext4"
	l.ControlSocket = "/run/microvm/vm1.api"
	l.Kernel, l.Initrd = "/var/lib/microvm/kernels/vmlinux", "/var/lib/microvm/vms/vm1/initramfs.cpio"
	switch share {
	case vmm.ShareVirtiofs:
		l.Shares[0].VirtiofsSocket = "/run/microvm/vm1-store.sock"
	case vmm.ShareBlock:
		l.Shares[0].Block = "/var/lib/microvm/cache/store-blocks/0123abcd.ext4"
	}
	return vm, l
}

func TestGoldenCommandLines(t *testing.T) {
	for _, share := range []string{vmm.ShareVirtiofs, vmm.ShareBlock} {
		vm, l := launch(t, share)
		cmd, err := Backend{}.Command(vm, l)
		if err != nil {
			t.Fatal(err)
		}
		if cmd.SerialToStdout || len(cmd.Files) != 0 {
			t.Errorf("%s: unexpected files or stdout console: %+v", share, cmd)
		}
		testutil.Golden(t, "x86_64-"+share+".args", []byte(strings.Join(cmd.Argv, "\n")+"\n"))
	}
}

func TestRefuses9p(t *testing.T) {
	vm, l := launch(t, vmm.Share9p)
	if _, err := (Backend{}).Command(vm, l); err == nil || !strings.Contains(err.Error(), "cannot share the store over 9p") {
		t.Fatalf("err = %v", err)
	}
}

func TestAPI(t *testing.T) {
	api := testutil.NewFakeAPI(t, map[string]string{
		"PUT /api/v1/vm.power-button": "",
		"GET /api/v1/vm.info":         `{"config":{},"state":"Running","memory_actual_size":1073741824}`,
		"GET /api/v1/vmm.ping":        `{"build_version":"v41.0-0","version":"41.0.0","pid":1234}`,
	})
	l := vmm.Launch{ControlSocket: api.Socket}
	if err := (Backend{}).Shutdown(l, 0); err != nil {
		t.Fatal(err)
	}
	info, err := Backend{}.Info(l)
	if err != nil {
		t.Fatal(err)
	}
	if info != (vmm.Info{State: "running", Version: "41.0.0"}) {
		t.Errorf("info = %+v", info)
	}
	want := []testutil.APIRequest{
		{Method: "PUT", Path: "/api/v1/vm.power-button"},
		{Method: "GET", Path: "/api/v1/vm.info"},
		{Method: "GET", Path: "/api/v1/vmm.ping"},
	}
	if got := api.Requests(); !reflect.DeepEqual(got, want) {
		t.Errorf("requests = %+v, want %+v", got, want)
	}
}

func TestAPIErrorsCarryTheVMMsMessage(t *testing.T) {
	api := testutil.NewFakeAPI(t, nil)
	err := Backend{}.Shutdown(vmm.Launch{ControlSocket: api.Socket}, 0)
	if err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "unknown route") {
		t.Fatalf("err = %v", err)
	}
	err = Backend{}.Shutdown(vmm.Launch{ControlSocket: filepath.Join(t.TempDir(), "none.sock")}, 0)
	if err == nil || !strings.Contains(err.Error(), "none.sock") {
		t.Fatalf("err = %v", err)
	}
}

func TestCheckKernel(t *testing.T) {
	dir := t.TempDir()
	bz := filepath.Join(dir, "vmlinuz")
	elf := filepath.Join(dir, "vmlinux")
	os.WriteFile(bz, []byte("MZ\x00\x00 a compressed bzImage"), 0o644)
	os.WriteFile(elf, []byte("\x7fELF\x02\x01\x01"), 0o644)
	if err := (Backend{}).CheckKernel(bz, vmm.ArchX86_64); err == nil || !strings.Contains(err.Error(), "uncompressed ELF kernel") {
		t.Errorf("bzImage accepted: %v", err)
	}
	if err := (Backend{}).CheckKernel(elf, vmm.ArchX86_64); err != nil {
		t.Error(err)
	}
}

func TestPauseResume(t *testing.T) {
	api := testutil.NewFakeAPI(t, map[string]string{"PUT /api/v1/vm.pause": "", "PUT /api/v1/vm.resume": ""})
	l := vmm.Launch{ControlSocket: api.Socket}
	if err := (Backend{}).Pause(l); err != nil {
		t.Fatal(err)
	}
	if err := (Backend{}).Resume(l); err != nil {
		t.Fatal(err)
	}
	want := []testutil.APIRequest{{Method: "PUT", Path: "/api/v1/vm.pause"}, {Method: "PUT", Path: "/api/v1/vm.resume"}}
	if got := api.Requests(); !reflect.DeepEqual(got, want) {
		t.Errorf("requests = %+v", got)
	}
}

// The balloon is set by vm.resize's desired_balloon and read from
// vm.info's memory_actual_size, as cloud-hypervisor's API has them.
func TestBalloon(t *testing.T) {
	api := testutil.NewFakeAPI(t, map[string]string{"PUT /api/v1/vm.resize": "", "GET /api/v1/vm.info": `{"state":"Running","memory_actual_size":805306368}`})
	l := vmm.Launch{ControlSocket: api.Socket}
	if err := (Backend{}).SetBalloon(l, 1<<30, 256<<20); err != nil {
		t.Fatal(err)
	}
	taken, err := Backend{}.Balloon(l, 1<<30)
	if err != nil || taken != 256<<20 {
		t.Fatalf("Balloon = %d, %v; want 256 MiB", taken, err)
	}
	want := []testutil.APIRequest{{Method: "PUT", Path: "/api/v1/vm.resize", Body: `{"desired_balloon":268435456}`}, {Method: "GET", Path: "/api/v1/vm.info"}}
	if got := api.Requests(); !reflect.DeepEqual(got, want) {
		t.Errorf("requests = %+v", got)
	}
}
