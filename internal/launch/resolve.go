package launch

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/confine"
	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/moddisk"
	"microvm.dev/microvm/internal/store"
	"microvm.dev/microvm/internal/storeimage"
	"microvm.dev/microvm/internal/vmm"
	"microvm.dev/microvm/internal/vmm/backends"
	"microvm.dev/microvm/internal/vmmuser"
)

// tapFD is the descriptor an unprivileged hypervisor finds its TAP on
// (the first of exec.Cmd's ExtraFiles).
const tapFD = 3

// Resolved is how one VM boots on this host, decided without writing
// anything: `microvm render runner` prints exactly what Prepare runs.
type Resolved struct {
	// Backend is the VM's hypervisor.
	Backend vmm.Backend
	// Kernel is the kernel it boots (and its modules).
	Kernel guest.Kernel
	// Share is how the store reaches the guest (vmm.ShareVirtiofs, …).
	Share string
	// Image is the store image the VM boots from (ID PendingTree when
	// it is not in the store yet).
	Image store.Image
	// Launch is the hypervisor's inputs: files, sockets, devices.
	Launch vmm.Launch
	// Command is the command line, with Binary the hypervisor itself and
	// Argv what runs (after nsenter and setpriv where they apply).
	Command vmm.Command
	// Pins are the read-only disks it runs on (store image, module tree)
	// by the name a move keeps them under, and the path each has here.
	Pins map[string]string
	// User is who the hypervisor runs as (nil: root): the VM's own id
	// when the hypervisors have a range of ids.
	User *vmmuser.User
	// Confined is the root of its own an unprivileged hypervisor is shut
	// into (nil: none), in new mount and PID namespaces.
	Confined *confine.Spec
}

// Command resolves how vm boots from the image the store has now: an image
// not in the store yet (one Prepare would pull) is shown as the
// placeholder tree store/<pending>.
func Command(env Env, vm *config.VM) (*Resolved, error) {
	img, err := lookupImage(env, vm)
	if err != nil {
		return nil, err
	}
	return Resolve(env, vm, img)
}

// Resolve decides how vm boots from img on this host: its backend, kernel,
// store share, devices and the hypervisor's command line.
func Resolve(env Env, vm *config.VM, img store.Image) (*Resolved, error) {
	b, err := backends.Get(vm.Hypervisor)
	if err != nil {
		return nil, fmt.Errorf("vms.%s: %w", vm.Name, err)
	}
	arch := env.arch()
	kern, err := guest.ResolveKernel(vm.Kernel, arch, vmm.HostArch(), env.KernelCache)
	if err != nil {
		return nil, fmt.Errorf("vms.%s: %w", vm.Name, err)
	}
	share, err := env.ShareKind(b, vm)
	if err != nil {
		return nil, err
	}
	lay := env.Layout(vm.Name)
	caps := b.Capabilities()
	user, err := env.vmmUser(hypervisorUser(vm), false)
	if err != nil {
		return nil, err
	}
	l := lay.Launch(vm, caps)
	// Each VM is given only its own image tree.
	sh := vmm.Share{Tag: "store", Path: store.Open(env.StateDir).TreeDir(img.ID)}
	switch share {
	case vmm.ShareVirtiofs:
		sh.VirtiofsSocket = lay.VirtiofsSocket()
	case vmm.ShareBlock:
		if sh.Block, err = blockImage(env.StateDir, img.ID, sh.Path); err != nil {
			return nil, fmt.Errorf("vms.%s: %w", vm.Name, err)
		}
	}
	l.Shares = []vmm.Share{sh}
	l.Template = templateMemory(env, vm, lay)
	// The kernel's own module tree, one read-only disk for every VM that
	// boots this kernel.
	if !env.NoModuleTree {
		if l.Modules, err = moddisk.Path(ModulesCache(env.StateDir), kern.Modules); err != nil {
			return nil, fmt.Errorf("vms.%s: %w", vm.Name, err)
		}
	}
	pins := usePins(lay.Dir(), kern, &l)
	l.Arch = arch
	// QEMU 7.2 gives a page back from a clone's private mapping of its
	// template's memory file by punching a hole in the file (seen here:
	// the file changed under the template's other clones), so neither a
	// template nor a clone reports free pages (the device is the same on
	// both sides of the restore), nor has a memoryMin (config).
	l.NoFreePageReporting, l.TBSizeMiB = env.NoFreePageReporting || l.Template != nil, env.TBSizeMiB
	l.KVM = arch == vmm.HostArch() && vmm.HardwareKVM() && env.canOpen("/dev/kvm")
	if !l.KVM && l.TBSizeMiB == 0 {
		l.TBSizeMiB = TranslationCacheMiB(vm.Memory)
	}
	l.VHostNet = l.KVM && env.canOpen("/dev/vhost-net")
	l.Kernel = env.BootKernel(kern, b, arch)
	if !l.KVM && arch == vmm.ArchX86_64 && l.Kernel != kern.Image && !env.Q35 {
		// Under TCG the microvm machine boots a PVH kernel when it is told
		// the TSC's frequency (0, and so q35, where the host does not say).
		l.TSCKHz = vmm.HostTSCKHz()
	}
	// The VM's own initramfs holds its SSH host key and secrets: it is made
	// in the VM's run directory (on a tmpfs on a real host) and removed
	// once the hypervisor has loaded it.
	l.Initrd = lay.Initrd()
	if user != nil && caps.TAPFromFD {
		// The TAP is opened as root and handed over on a descriptor, so the
		// hypervisor needs neither /dev/net/tun nor the TAP's ownership.
		l.TAPFD = tapFD
	}
	cmd, err := b.Command(vm, l)
	if err != nil {
		return nil, err
	}
	cmd.Binary = cmd.Argv[0]
	if user != nil {
		// A 9p server reads the image as the hypervisor's user: it may read
		// any file (an image's root-only files), and nothing else.
		var keep []string
		if share == vmm.Share9p {
			keep = []string{"dac_read_search"}
		}
		cmd.Argv = append(user.Prefix(keep...), cmd.Argv...)
	}
	var jail *confine.Spec
	if user != nil && env.Self != "" {
		jail = confined(lay, l, cmd)
		cmd.Argv = confine.Args(env.Self, *jail, cmd.Argv)
	}
	if env.NetNS != "" {
		cmd.Argv = append([]string{"nsenter", "--net=" + env.NetNS, "--"}, cmd.Argv...)
	}
	return &Resolved{Backend: b, Kernel: kern, Share: share, Image: img, Launch: l, Command: cmd, User: user, Confined: jail, Pins: pins}, nil
}

// confined is the root an unprivileged hypervisor is shut into: its VM's
// run directory (sockets, initramfs), console log, volumes and the files
// written for it (configuration, its own log) writable, its kernel and
// store read-only, and the devices it opens; nothing of another VM.
func confined(lay vmm.Layout, l vmm.Launch, cmd vmm.Command) *confine.Spec {
	s := &confine.Spec{Root: filepath.Join(lay.Run(), "root"), Writable: []string{lay.Run()}}
	inRun := func(p string) bool { return strings.HasPrefix(p, lay.Run()+"/") }
	add := func(list *[]string, p string) {
		if p != "" && !inRun(p) && !slices.Contains(*list, p) {
			*list = append(*list, p)
		}
	}
	if !cmd.SerialToStdout {
		add(&s.Writable, l.ConsoleLog)
	}
	for _, d := range l.Disks {
		add(&s.Writable, d.Path)
	}
	add(&s.ReadOnly, l.Kernel)
	add(&s.ReadOnly, l.Initrd)
	add(&s.ReadOnly, l.Modules)
	for _, sh := range l.Shares {
		switch {
		case sh.Block != "":
			add(&s.ReadOnly, sh.Block)
		case sh.VirtiofsSocket != "":
			add(&s.Writable, sh.VirtiofsSocket)
		default:
			add(&s.ReadOnly, sh.Path)
		}
	}
	if t := l.Template; t != nil {
		// A clone's QEMU opens its template's memory read-write to map it
		// private (QEMU 7.2 maps a file it may only read as read-only
		// memory); its writes stay its own.
		add(&s.Writable, t.Path)
		add(&s.ReadOnly, t.Identity)
	}
	for _, path := range slices.Sorted(maps.Keys(cmd.Files)) {
		add(&s.Writable, path) // its configuration and its own log
	}
	if l.KVM {
		s.Devices = append(s.Devices, "/dev/kvm")
	}
	if l.VHostNet {
		s.Devices = append(s.Devices, "/dev/vhost-net")
	}
	if l.TAPFD == 0 {
		s.Devices = append(s.Devices, "/dev/net/tun") // it opens its TAP by name
	}
	return s
}

// BootKernel is the kernel image backend b boots for kern: on x86_64, for
// a backend that boots PVH, the ELF vmlinux extracted from the bzImage once
// and cached (guest.PVHKernel); else, or when the kernel has no PVH entry
// or cannot be extracted, the image itself.
func (e Env) BootKernel(kern guest.Kernel, b vmm.Backend, arch string) string {
	if arch != vmm.ArchX86_64 || !b.Capabilities().PVH || e.BzImage {
		return kern.Image
	}
	cache := e.KernelCache
	if cache == "" {
		cache = filepath.Join(e.StateDir, "cache")
	}
	if v, err := guest.PVHKernel(kern.Image, cache); err == nil && v != "" {
		return v
	}
	return kern.Image
}

// blockImage is where the read-only disk image of the store tree of image
// id (at tree) is cached.
func blockImage(stateDir, id, tree string) (string, error) {
	switch {
	case id == PendingTree:
		return filepath.Join(BlockCache(stateDir), PendingTree+".ext4"), nil
	case store.IsTreeID(id):
		// A content-addressed tree never changes: its id is the key, no walk.
		return filepath.Join(BlockCache(stateDir), id+".ext4"), nil
	}
	// A plain directory made by hand: keyed by walking it.
	return storeimage.Path(BlockCache(stateDir), tree)
}

// ModulesCache is where the disk images of kernels' module trees are cached.
func ModulesCache(stateDir string) string { return filepath.Join(stateDir, "cache", "modules") }

// BlockCache is where read-only disk images of store trees are cached.
func BlockCache(stateDir string) string { return filepath.Join(stateDir, "cache", "store-blocks") }

// ShareKind decides how the store reaches vm, a guest of backend b: its
// own store key, else the host's choice (Env.Share); auto is the backend's
// first share that works here (virtiofs only with a virtiofsd).
func (e Env) ShareKind(b vmm.Backend, vm *config.VM) (string, error) {
	if vm == nil {
		return shareKind(b, e.Share)
	}
	want, field := e.Share, "vms."+vm.Name+" (the host's --share)"
	if vm.Store != "" && vm.Store != "auto" {
		want, field = vm.Store, "vms."+vm.Name+".store"
	}
	kind, err := shareKind(b, want)
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	return kind, nil
}

func shareKind(b vmm.Backend, want string) (string, error) {
	kinds := b.Capabilities().Shares
	switch want {
	case "", "auto":
		for _, k := range kinds {
			if k != vmm.ShareVirtiofs || Virtiofsd() != "" {
				return k, nil
			}
		}
		return "", fmt.Errorf("%s shares the store only over virtiofs, and no virtiofsd is installed (looked in %v and PATH)", b.Name(), virtiofsdPaths)
	case vmm.ShareVirtiofs, vmm.Share9p, vmm.ShareBlock:
		if !slices.Contains(kinds, want) {
			return "", fmt.Errorf("%s cannot share the store over %s (it supports %s)", b.Name(), want, strings.Join(kinds, ", "))
		}
		if want == vmm.ShareVirtiofs && Virtiofsd() == "" {
			return "", fmt.Errorf("share virtiofs: no virtiofsd installed (looked in %v and PATH)", virtiofsdPaths)
		}
		return want, nil
	}
	return "", fmt.Errorf("unknown share type %q (virtiofs, 9p, block or auto)", want)
}
