// Package launch takes one VM from its config to a running hypervisor, as
// ordered steps (internal/steps) that are timed and undone in reverse when
// a later one fails: Prepare resolves the backend, kernel, store share,
// secrets and image (pulling it, cancellably) and makes the initramfs,
// keys and volumes; Start writes the hypervisor's files, caps it with
// cgroups, opens its TAP, starts its helpers and the hypervisor itself.
// Resolve is the pure part both share with `microvm render runner`.
// Running watches, stops and adopts hypervisors.
package launch

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"microvm.dev/microvm/internal/cgroup"
	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/hostnet"
	"microvm.dev/microvm/internal/secrets"
	"microvm.dev/microvm/internal/state"
	"microvm.dev/microvm/internal/vmm"
	"microvm.dev/microvm/internal/vmm/backends"
	"microvm.dev/microvm/internal/vmmuser"
)

// Env is the host side every launch shares.
type Env struct {
	// StateDir is microvm's state directory.
	StateDir string
	// RunDir holds sockets.
	RunDir string
	// KernelCache is where fetched kernels live (guest.DefaultKernelCache).
	KernelCache string
	// InitDir holds microvm-init binaries: microvm-init (host arch) and
	// microvm-init.<arch> for other guest architectures.
	InitDir string
	// Arch is the guest architecture (default: the host's).
	Arch string
	// NetNS, when set, runs the hypervisor in that network namespace (where
	// the TAPs are).
	NetNS string
	// DNS servers given to guests instead of their gateway (where the
	// daemon's resolver answers: internal/resolver).
	DNS []string
	// Share is how the store reaches guests: "virtiofs", "9p", "block" (a
	// read-only ext4 disk image), or "" (auto: the backend's first choice
	// that works here; for QEMU virtiofs when a virtiofsd is installed, else
	// 9p).
	Share string
	// Cgroups, when set, caps each VM's hypervisor with its limits; a VM
	// with limits fails to start without it.
	Cgroups *cgroup.Manager
	// VMMUser, when set, is the unprivileged user hypervisors run as
	// (nil: root). Helpers that need root (virtiofsd, in its own sandbox)
	// stay root.
	VMMUser *vmmuser.User
	// Self is the microvm binary; when set, each unprivileged hypervisor
	// is confined by its `confine` command to a root of its own, in new
	// mount and PID namespaces (internal/confine). "" leaves hypervisors
	// unconfined.
	Self string
	// Identities decrypt the VMs' age-encrypted secrets.
	Identities []secrets.Identity
	// HostImagePolicy is the host's floor (--image-key): the keys every
	// VM's image must be signed by besides its own imagePolicy's.
	HostImagePolicy config.ImagePolicy
	// BzImage boots x86 kernels as the bzImage they are, never as their
	// extracted PVH vmlinux (bench/cmd/bootbench compares the two).
	BzImage bool
	// Q35 boots x86 guests under TCG on QEMU's q35 machine even where the
	// microvm machine could run them (bench/cmd/bootbench compares the two).
	Q35 bool
	// NoModuleTree gives guests no disk of their kernel's module tree
	// (bench/cmd/bootbench measures what the disk costs a boot).
	NoModuleTree bool
	// NoFreePageReporting and TBSizeMiB are vmm.Launch's
	// (bench/cmd/densitybench measures what they cost); TBSizeMiB 0 is
	// TranslationCacheMiB of the VM's memory.
	NoFreePageReporting bool
	TBSizeMiB           int
}

// TranslationCacheMiB is the size of QEMU's TCG translation cache for an
// emulated guest of memory: a sixteenth of it, between 64 and 256 MiB.
// QEMU's own, 1 GiB whatever the guest, let one small VM's cache grow to
// more than its guest's memory; an idle 1 GiB guest translates about
// 60-80 MiB of code, and bench/cmd/densitybench measured the 64 MiB cap
// saving 15 MiB per VM of Debian's nginx with no slower boot
// (benchmarks.md, "Density").
func TranslationCacheMiB(memory config.Size) int {
	return min(256, max(64, int(memory.MiB()/16)))
}

// Layout names the files and sockets of the VM called name.
func (e Env) Layout(name string) vmm.Layout {
	return vmm.Layout{StateDir: e.StateDir, RunDir: e.RunDir, VM: name}
}

// TAPOwner is the uid the VMs' TAPs belong to, so their hypervisors can
// open them: the hypervisors' user (0 when they run as root).
func (e Env) TAPOwner() uint32 {
	if e.VMMUser == nil {
		return 0
	}
	return e.VMMUser.UID
}

// TAPOwners are the owners of the TAPs of cfg's VMs whose hypervisor
// opens its TAP by name (cloud-hypervisor, Firecracker) and runs as an id
// of its own: that id, given to the VM now when it has none yet and
// allocate is set (the network is applied before the VM starts; without
// allocate, as for a plan, nothing is written and a VM without an id is
// shown with the one it would get). The network gives every other TAP to
// the hypervisors' user (TAPOwner).
func (e Env) TAPOwners(cfg *config.Config, allocate bool) (map[string]hostnet.Owner, error) {
	out := map[string]hostnet.Owner{}
	if e.VMMUser == nil || e.VMMUser.IDs == nil {
		return out, nil
	}
	for _, vm := range cfg.VMs {
		b, err := backends.Get(vm.Hypervisor)
		if err != nil {
			return nil, fmt.Errorf("vms.%s: %w", vm.Name, err)
		}
		if b.Capabilities().TAPFromFD {
			continue // opened by root and handed over
		}
		u, err := e.vmmUser(hypervisorUser(vm), allocate)
		if err != nil {
			return nil, err
		}
		out[vm.Name] = hostnet.Owner{UID: u.UID, GID: u.GID}
	}
	return out, nil
}

// vmmUser is the identity vm's hypervisor runs as: an id of its own from
// the hypervisors' range when there is one (a hypervisor that opens its
// TAP by name is given the TAP: TAPOwners), else the hypervisors' user
// (nil: root). With allocate, a VM without an id is given one (recorded in
// its directory); without, the id it would get is shown and nothing is
// written.
func (e Env) vmmUser(vm string, allocate bool) (*vmmuser.User, error) {
	u := e.VMMUser
	if u == nil || u.IDs == nil {
		return u, nil
	}
	vmsDir := filepath.Dir(state.Dir{Root: e.StateDir}.VMDir(vm))
	off, err := vmmuser.Offsets{VMsDir: vmsDir, Count: u.IDs.Count}.Lookup(vm, allocate)
	if err != nil {
		return nil, fmt.Errorf("vms.%s: hypervisor identity: %w", vm, err)
	}
	return u.ForVM(off), nil
}

// canOpen says whether the hypervisors (as root or as VMMUser) may open
// the device at path.
func (e Env) canOpen(path string) bool {
	if e.VMMUser != nil {
		return e.VMMUser.CanOpen(path)
	}
	return unix.Access(path, unix.R_OK|unix.W_OK) == nil
}

func (e Env) arch() string {
	if e.Arch != "" {
		return e.Arch
	}
	return vmm.HostArch()
}

// goarch is the guest architecture in Go's (and OCI's) spelling.
func goarch(arch string) string {
	return map[string]string{vmm.ArchX86_64: "amd64", vmm.ArchAArch64: "arm64"}[arch]
}

// InitBinary finds microvm-init for arch in dir.
func InitBinary(dir, arch string) (string, error) {
	names := []string{"microvm-init." + arch}
	if arch == vmm.HostArch() {
		names = append([]string{"microvm-init"}, names...)
	}
	for _, n := range names {
		p := filepath.Join(dir, n)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("no microvm-init for %s in %s (build it: CGO_ENABLED=0 GOARCH=%s go build -o %s ./cmd/microvm-init)",
		arch, dir, goarch(arch), filepath.Join(dir, names[0]))
}
