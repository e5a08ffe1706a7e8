package firecracker

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/testutil"
	"microvm.dev/microvm/internal/vmm"
)

// Firecracker cannot run on this machine (no /dev/kvm, no package), so
// these tests check its configuration file against a recorded golden file
// and the API calls against a fake API server.

const src = `
vms:
  vm1:
    index: 1
    vcpu: 2
    memory: 1G
    kernelParams: [apparmor=0, mitigations=off]
    hypervisor: firecracker
    volumes:
      - { name: data, mountPoint: /mnt/storage, size: 64G }
      - { name: logs, mountPoint: /var/log/app, size: 1G }
`

func launch(t *testing.T) (*config.VM, vmm.Launch) {
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
	l.Shares[0].Block = "/var/lib/microvm/cache/store-blocks/0123abcd.ext4"
	return vm, l
}

func TestGoldenConfig(t *testing.T) {
	vm, l := launch(t)
	cmd, err := Backend{}.Command(vm, l)
	if err != nil {
		t.Fatal(err)
	}
	if !cmd.SerialToStdout {
		t.Error("firecracker's console is its stdout")
	}
	testutil.Golden(t, "x86_64.args", []byte(strings.Join(cmd.Argv, "\n")+"\n"))
	js := cmd.Files[ConfigPath(l)]
	testutil.Golden(t, "x86_64.json", js)
	var back Config
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Drives) != 4 || !back.Drives[0].IsReadOnly || back.Drives[1].IsReadOnly || back.Drives[0].IsRootDevice || !back.Drives[3].IsReadOnly {
		t.Errorf("drives = %+v: the store must be first and read-only, volumes writable, the kernel's modules last and read-only, none the root", back.Drives)
	}
	if _, ok := cmd.Files[LogPath(l)]; !ok {
		t.Error("the log file is not created beforehand (firecracker does not create it)")
	}
	want := map[string]string{vmm.StoreSerial: "vda", "data": "vdb", "logs": "vdc", vmm.ModulesSerial: "vdd"}
	if got := (Backend{}).DiskDevices(l); !reflect.DeepEqual(got, want) {
		t.Errorf("disk devices = %v, want %v", got, want)
	}
}

func TestRefusesSharedDirectories(t *testing.T) {
	vm, l := launch(t)
	l.Shares[0].Block = ""
	for _, sock := range []string{"", "/run/microvm/vm1-store.sock"} {
		l.Shares[0].VirtiofsSocket = sock
		if _, err := (Backend{}).Command(vm, l); err == nil || !strings.Contains(err.Error(), "no shared directories") {
			t.Errorf("share %q: err = %v", l.Shares[0].Kind(), err)
		}
	}
}

func TestAPI(t *testing.T) {
	api := testutil.NewFakeAPI(t, map[string]string{
		"PUT /actions": "",
		"GET /":        `{"id":"vm1","state":"Running","vmm_version":"1.9.0","app_name":"Firecracker"}`,
	})
	l := vmm.Launch{Arch: vmm.ArchX86_64, ControlSocket: api.Socket}
	if err := (Backend{}).Shutdown(l, 0); err != nil {
		t.Fatal(err)
	}
	info, err := Backend{}.Info(l)
	if err != nil {
		t.Fatal(err)
	}
	if info != (vmm.Info{State: "running", Version: "1.9.0"}) {
		t.Errorf("info = %+v", info)
	}
	want := []testutil.APIRequest{
		{Method: "PUT", Path: "/actions", Body: `{"action_type":"SendCtrlAltDel"}`},
		{Method: "GET", Path: "/"},
	}
	if got := api.Requests(); !reflect.DeepEqual(got, want) {
		t.Errorf("requests = %+v, want %+v", got, want)
	}
	l.Arch = vmm.ArchAArch64
	if err := (Backend{}).Shutdown(l, 0); err == nil {
		t.Error("aarch64 has no Ctrl-Alt-Del action; Shutdown must say so")
	}
}

func TestPauseResume(t *testing.T) {
	api := testutil.NewFakeAPI(t, map[string]string{"PATCH /vm": ""})
	l := vmm.Launch{ControlSocket: api.Socket}
	if err := (Backend{}).Pause(l); err != nil {
		t.Fatal(err)
	}
	if err := (Backend{}).Resume(l); err != nil {
		t.Fatal(err)
	}
	want := []testutil.APIRequest{{Method: "PATCH", Path: "/vm", Body: `{"state":"Paused"}`}, {Method: "PATCH", Path: "/vm", Body: `{"state":"Resumed"}`}}
	if got := api.Requests(); !reflect.DeepEqual(got, want) {
		t.Errorf("requests = %+v", got)
	}
}

// The balloon is set by PATCH /balloon in MiB and read back from GET
// /balloon, as Firecracker's API has them.
func TestBalloon(t *testing.T) {
	api := testutil.NewFakeAPI(t, map[string]string{"PATCH /balloon": "", "GET /balloon": `{"amount_mib":256,"deflate_on_oom":true}`})
	l := vmm.Launch{ControlSocket: api.Socket}
	if err := (Backend{}).SetBalloon(l, 1<<30, 256<<20); err != nil {
		t.Fatal(err)
	}
	taken, err := Backend{}.Balloon(l, 1<<30)
	if err != nil || taken != 256<<20 {
		t.Fatalf("Balloon = %d, %v; want 256 MiB", taken, err)
	}
	want := []testutil.APIRequest{{Method: "PATCH", Path: "/balloon", Body: `{"amount_mib":256}`}, {Method: "GET", Path: "/balloon"}}
	if got := api.Requests(); !reflect.DeepEqual(got, want) {
		t.Errorf("requests = %+v", got)
	}
}
