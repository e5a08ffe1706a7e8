package qemu

import (
	"fmt"
	"strings"
	"testing"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/testutil"
	"microvm.dev/microvm/internal/vmm"
)

const src = `
vms:
  vm1:
    index: 1
    vcpu: 2
    memory: 1G
    kernelParams: [apparmor=0, mitigations=off]
    volumes:
      - { name: data, mountPoint: /mnt/storage, size: 64G }
      - { name: logs, mountPoint: /var/log/app, size: 1G }
`

func launch(t *testing.T, arch string, kvm bool, virtiofs bool) (*config.VM, vmm.Launch) {
	t.Helper()
	cfg, err := config.Parse("t.yaml", []byte(src), config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	vm := cfg.VM("vm1")
	l := vmm.Layout{StateDir: "/var/lib/microvm", RunDir: "/run/microvm", VM: vm.Name}.Launch(vm, Backend{}.Capabilities())
	l.Shares = []vmm.Share{{Tag: "store", Path: "/var/lib/microvm/store"}}
	l.Modules = "/var/lib/microvm/cache/modules/4567cdef.ext4"
	l.Arch, l.KVM, l.VHostNet = arch, kvm, kvm
	l.Kernel, l.Initrd = "/boot/vmlinuz", "/var/lib/microvm/vms/vm1/initramfs.cpio"
	if virtiofs {
		l.Shares[0].VirtiofsSocket = "/run/microvm/vm1-store.sock"
	}
	return vm, l
}

func TestGoldenCommandLines(t *testing.T) {
	for _, c := range []struct {
		name     string
		arch     string
		kvm      bool
		virtiofs bool
		tscKHz   int
	}{
		{"x86_64-kvm", vmm.ArchX86_64, true, true, 0},
		{"x86_64-tcg", vmm.ArchX86_64, false, false, 0},
		// TCG with the host's TSC frequency known: the microvm machine.
		{"x86_64-tcg-microvm", vmm.ArchX86_64, false, false, 2100000},
		{"aarch64-tcg", vmm.ArchAArch64, false, false, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			vm, l := launch(t, c.arch, c.kvm, c.virtiofs)
			l.TSCKHz = c.tscKHz
			argv := Command(vm, l)
			testutil.Golden(t, c.name+".args", []byte(strings.Join(argv, "\n")+"\n"))
		})
	}
}

// TestGoldenResume is the command line of a saved VM's resume under KVM
// (not measurable here): the microvm machine, its block store, waiting for
// the state.
func TestGoldenResume(t *testing.T) {
	vm, l := launch(t, vmm.ArchX86_64, true, false)
	l.Shares = []vmm.Share{{Tag: "store", Path: "/var/lib/microvm/store/tree", Block: "/var/lib/microvm/cache/store-blocks/tree.ext4"}}
	argv := append(Command(vm, l), Backend{}.IncomingArgs()...)
	testutil.Golden(t, "x86_64-kvm-resume.args", []byte(strings.Join(argv, "\n")+"\n"))
}

func TestCommandShape(t *testing.T) {
	vm, l := launch(t, vmm.ArchX86_64, false, false)
	cmd := strings.Join(Command(vm, l), " ")
	for _, want := range []string{
		"-machine q35,accel=tcg", "-smp 2", "-m 1024M", "-nodefaults", "-no-user-config",
		"ifname=vm-vm1", "mac=02:00:00:00:00:01", "serial=data", "serial=logs", "readonly=on", "console=ttyS0",
	} {
		if !strings.Contains(cmd, want) {
			t.Errorf("TCG command line lacks %q:\n%s", want, cmd)
		}
	}
	vm, l = launch(t, vmm.ArchX86_64, true, true)
	cmd = strings.Join(Command(vm, l), " ")
	for _, want := range []string{"microvm,accel=kvm", "-bios qboot.rom", "virtio-net-device", "vhost-user-fs-device", "memory-backend-memfd", "memory-backend=mem", "vhost=on"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("KVM command line lacks %q:\n%s", want, cmd)
		}
	}
	vm, l = launch(t, vmm.ArchAArch64, false, false)
	cmd = strings.Join(Command(vm, l), " ")
	for _, want := range []string{"qemu-system-aarch64", "virt,gic-version=max", "console=ttyAMA0"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("aarch64 command line lacks %q:\n%s", want, cmd)
		}
	}
	if strings.Contains(cmd, "-bios") {
		t.Errorf("aarch64 command line names a firmware:\n%s", cmd)
	}
}

// Under TCG a translation cache size moves the accelerator to -accel
// (QEMU refuses it beside the machine's accel=); under KVM it is not
// given. Free page reporting can be left off (the density benchmark).
func TestTranslationCacheAndReporting(t *testing.T) {
	vm, l := launch(t, vmm.ArchX86_64, false, false)
	l.TSCKHz, l.TBSizeMiB, l.NoFreePageReporting = 2100000, 128, true
	argv := strings.Join(Command(vm, l), " ")
	for _, want := range []string{"-accel tcg,tb-size=128 -machine microvm,pit=on", "-bios qboot.rom", "virtio-balloon-device,deflate-on-oom=on"} {
		if !strings.Contains(argv, want) {
			t.Errorf("command line lacks %q:\n%s", want, argv)
		}
	}
	if strings.Contains(argv, "accel=tcg") || strings.Contains(argv, "free-page-reporting") {
		t.Errorf("command line:\n%s", argv)
	}
	vm, l = launch(t, vmm.ArchX86_64, true, false)
	l.TBSizeMiB = 128
	if argv := strings.Join(Command(vm, l), " "); strings.Contains(argv, "tb-size") || !strings.Contains(argv, "accel=kvm") {
		t.Errorf("a KVM guest's command line:\n%s", argv)
	}
}

// A template keeps its memory in a shared file (its save leaves it
// there); a clone maps the same file private, copy-on-write.
func TestTemplateMemory(t *testing.T) {
	for _, c := range []struct {
		clone bool
		share string
	}{{false, "share=on"}, {true, "share=off"}} {
		vm, l := launch(t, vmm.ArchX86_64, false, false)
		l.Template = &vmm.TemplateMemory{Path: "/var/lib/microvm/vms/tmpl/memory", Clone: c.clone}
		cmd := strings.Join(Command(vm, l), " ")
		want := "memory-backend-file,id=mem,size=" + fmt.Sprint(vm.Memory.MiB()) + "M,mem-path=/var/lib/microvm/vms/tmpl/memory," + c.share
		if !strings.Contains(cmd, want) || !strings.Contains(cmd, "memory-backend=mem") {
			t.Errorf("clone %v: command line lacks %q:\n%s", c.clone, want, cmd)
		}
	}
}
