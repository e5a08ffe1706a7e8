// Package launch prepares everything one VM boots from (kernel, initramfs
// with its spec, SSH identities, data volumes, console log) and starts,
// watches and stops its hypervisor process.
package launch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"microvm.dev/microvm/internal/cgroup"
	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/hostnet"
	"microvm.dev/microvm/internal/secrets"
	"microvm.dev/microvm/internal/sshkey"
	"microvm.dev/microvm/internal/state"
	"microvm.dev/microvm/internal/store"
	"microvm.dev/microvm/internal/storeimage"
	"microvm.dev/microvm/internal/vmm"
	"microvm.dev/microvm/internal/vmm/cloudhypervisor"
	"microvm.dev/microvm/internal/vmm/firecracker"
	"microvm.dev/microvm/internal/vmm/qemu"
	"microvm.dev/microvm/internal/vmmuser"
	"microvm.dev/microvm/internal/volume"
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
	// DNS servers given to guests (default 1.1.1.1, as the reference setup).
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
	// Identities decrypt the VMs' age-encrypted secrets.
	Identities []secrets.Identity
}

// SecretError is a secret of a VM that this host cannot give it.
type SecretError struct {
	VM    string
	Index int
	// Path is where the secret goes in the guest.
	Path string
	Err  error
}

// Key is the secret's key path in the file, vms.NAME.secrets[I].
func (e *SecretError) Key() string { return fmt.Sprintf("vms.%s.secrets[%d]", e.VM, e.Index) }

func (e *SecretError) Error() string { return fmt.Sprintf("%s (%s): %v", e.Key(), e.Path, e.Err) }

func (e *SecretError) Unwrap() error { return e.Err }

// Secrets decrypts vm's secrets with the host's identities. Every secret
// that fails is a *SecretError in the (joined) error, naming it, never its
// content; nothing is written.
func (e Env) Secrets(vm *config.VM) ([]guest.SecretFile, error) {
	var out []guest.SecretFile
	var errs []error
	for i, sec := range vm.Secrets {
		data, err := secrets.Decrypt(sec.Age, e.Identities)
		var mode uint32
		if err == nil {
			mode, err = config.ParseFileMode(sec.Mode)
		}
		if err != nil {
			errs = append(errs, &SecretError{VM: vm.Name, Index: i, Path: sec.Path, Err: err})
			continue
		}
		out = append(out, guest.SecretFile{Path: sec.Path, Mode: mode, Owner: sec.Owner, Data: data})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// TAPOwner is the uid the VMs' TAPs belong to, so their hypervisors can
// open them: the hypervisors' user (0 when they run as root).
func (e Env) TAPOwner() uint32 {
	if e.VMMUser == nil {
		return 0
	}
	return e.VMMUser.UID
}

// canOpen says whether the hypervisors (as root or as VMMUser) may open
// the device at path.
func (e Env) canOpen(path string) bool {
	if e.VMMUser != nil {
		return e.VMMUser.CanOpen(path)
	}
	return unix.Access(path, unix.R_OK|unix.W_OK) == nil
}

// Backend returns the hypervisor backend of that name (vms.*.hypervisor).
func Backend(name string) (vmm.Backend, error) {
	switch name {
	case "", "qemu":
		return qemu.Backend{}, nil
	case "cloud-hypervisor":
		return cloudhypervisor.Backend{}, nil
	case "firecracker":
		return firecracker.Backend{}, nil
	}
	return nil, fmt.Errorf("unknown hypervisor %q", name)
}

// virtiofsdPaths are where distributions install virtiofsd.
var virtiofsdPaths = []string{"/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd", "/usr/bin/virtiofsd"}

// Virtiofsd returns the installed virtiofsd, or "".
func Virtiofsd() string {
	for _, p := range virtiofsdPaths {
		if unix.Access(p, unix.X_OK) == nil {
			return p
		}
	}
	if p, err := exec.LookPath("virtiofsd"); err == nil {
		return p
	}
	return ""
}

// ShareKind decides how the store reaches a guest of backend b.
func (e Env) ShareKind(b vmm.Backend) (string, error) {
	kinds := b.ShareKinds()
	switch e.Share {
	case "", "auto":
		for _, k := range kinds {
			if k != vmm.ShareVirtiofs || Virtiofsd() != "" {
				return k, nil
			}
		}
		return "", fmt.Errorf("%s shares the store only over virtiofs, and no virtiofsd is installed (looked in %v and PATH)", b.Name(), virtiofsdPaths)
	case vmm.ShareVirtiofs, vmm.Share9p, vmm.ShareBlock:
		if !slices.Contains(kinds, e.Share) {
			return "", fmt.Errorf("%s cannot share the store over %s (it supports %s)", b.Name(), e.Share, strings.Join(kinds, ", "))
		}
		if e.Share == vmm.ShareVirtiofs && Virtiofsd() == "" {
			return "", fmt.Errorf("share virtiofs: no virtiofsd installed (looked in %v and PATH)", virtiofsdPaths)
		}
		return e.Share, nil
	}
	return "", fmt.Errorf("unknown share type %q (virtiofs, 9p, block or auto)", e.Share)
}

// BlockCache is where read-only disk images of store trees are cached.
func BlockCache(stateDir string) string { return filepath.Join(stateDir, "cache", "store-blocks") }

// tapFD is the descriptor an unprivileged hypervisor finds its TAP on
// (the first of exec.Cmd's ExtraFiles).
const tapFD = 3

// Prepared is a VM ready to start.
type Prepared struct {
	VM *config.VM
	// Backend is the VM's hypervisor.
	Backend vmm.Backend
	// Argv is the command line, binary first (after nsenter when the VM
	// runs in a network namespace, and setpriv when it runs unprivileged).
	Argv []string
	// Binary is the hypervisor binary Argv runs.
	Binary string
	// User is who the hypervisor runs as (nil: root).
	User *vmmuser.User
	// NetNS is the network namespace of the VM's TAP ("" for the host's).
	NetNS string
	// Files are written before the hypervisor starts (its configuration).
	Files map[string][]byte
	// SerialToStdout points the hypervisor's stdout at the console log.
	SerialToStdout bool
	// Cgroups caps the hypervisor when the VM has limits.
	Cgroups    *cgroup.Manager
	Launch     vmm.Launch
	Volumes    map[string]volume.Action
	BaseCached bool
	// ClientKey is microvm's own SSH key, authorized in the VM.
	ClientKey string
	// HostKeyPub is the VM's SSH host key (authorized_keys format).
	HostKeyPub string
}

// ClientKeyPath is microvm's own SSH client key.
func ClientKeyPath(stateDir string) string { return filepath.Join(stateDir, "ssh", "id_ed25519") }

func (e Env) arch() string {
	if e.Arch != "" {
		return e.Arch
	}
	return vmm.HostArch()
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
		arch, dir, map[string]string{vmm.ArchX86_64: "amd64", vmm.ArchAArch64: "arm64"}[arch], filepath.Join(dir, names[0]))
}

// ResolveImage returns the store image vm boots from. An OCI reference
// is pulled when pull is set and the VM's pull policy asks for it
// (missing: when the store lacks it; always: every time; never: not).
func ResolveImage(ctx context.Context, env Env, vm *config.VM, pull bool) (store.Image, error) {
	st := store.Open(env.StateDir)
	ref := strings.ContainsAny(vm.Image, "/:@")
	policy := vm.Supervision.PullPolicy
	if ref && pull && policy == config.PullAlways {
		return pullImage(ctx, env, st, vm)
	}
	img, err := st.Get(vm.Image)
	switch {
	case err == nil:
		return img, nil
	case !errors.Is(err, store.ErrNotFound):
		return store.Image{}, fmt.Errorf("vms.%s.image: %w", vm.Name, err)
	case !ref:
		return store.Image{}, notFound("vms.%s.image: image %q is not in the store (import it: microvm image import %s DIR|TARBALL; the base image: scripts/build-base-image.sh %s)",
			vm.Name, vm.Image, vm.Image, filepath.Join(st.Trees, vm.Image))
	case policy == config.PullNever:
		return store.Image{}, notFound("vms.%s.image: %s has not been pulled and pullPolicy is never (microvm image pull %s)", vm.Name, vm.Image, vm.Image)
	case !pull:
		return store.Image{}, notFound("vms.%s.image: %s has not been pulled yet (microvm image pull %s)", vm.Name, vm.Image, vm.Image)
	}
	return pullImage(ctx, env, st, vm)
}

// notFound is an error saying an image is not in the store; it matches
// store.ErrNotFound.
func notFound(format string, args ...any) error {
	return notFoundError{fmt.Sprintf(format, args...)}
}

type notFoundError struct{ msg string }

func (e notFoundError) Error() string { return e.msg }
func (e notFoundError) Unwrap() error { return store.ErrNotFound }

func pullImage(ctx context.Context, env Env, st *store.Store, vm *config.VM) (store.Image, error) {
	goarch := map[string]string{vmm.ArchX86_64: "amd64", vmm.ArchAArch64: "arm64"}[env.arch()]
	img, err := st.Pull(ctx, vm.Image, store.Options{Arch: goarch})
	if err != nil {
		return store.Image{}, fmt.Errorf("vms.%s.image: %w", vm.Name, err)
	}
	return img, nil
}

// Workload is what runs in vm with image's config: the VM's command, env,
// workdir and user where it sets them, else the image's entrypoint and
// cmd, environment (the VM's variables win), working directory and user.
// It is nil when neither gives a command.
func Workload(vm *config.VM, img store.Config) *guest.Workload {
	cmd := vm.Command
	if len(cmd) == 0 {
		cmd = append(append([]string(nil), img.Entrypoint...), img.Cmd...)
	}
	if len(cmd) == 0 {
		return nil
	}
	var env map[string]string
	if len(img.Env) > 0 || len(vm.Env) > 0 {
		env = map[string]string{}
		for _, kv := range img.Env {
			if k, v, ok := strings.Cut(kv, "="); ok {
				env[k] = v
			}
		}
		for k, v := range vm.Env {
			env[k] = v
		}
	}
	w := &guest.Workload{Command: cmd, Env: env, Workdir: vm.Workdir, User: vm.User}
	if w.Workdir == "" {
		w.Workdir = img.WorkingDir
	}
	if w.User == "" {
		w.User = img.User
	}
	return w
}

// Command resolves what vm boots with and returns the hypervisor launch and
// command, without writing anything: `microvm render runner` prints
// exactly what Prepare will run.
// An image that is not in the store yet (an OCI reference Prepare would
// pull) is shown as the placeholder tree store/<pending>.
func Command(env Env, vm *config.VM) (vmm.Launch, vmm.Command, error) {
	l, cmd, _, _, err := command(env, vm, true)
	return l, cmd, err
}

// PendingTree is the placeholder tree of an image not in the store yet.
const PendingTree = "<pending>"

// command is Command that also returns the backend and the resolved kernel,
// so Prepare resolves them once.
func command(env Env, vm *config.VM, lenient bool) (vmm.Launch, vmm.Command, vmm.Backend, guest.Kernel, error) {
	fail := func(err error) (vmm.Launch, vmm.Command, vmm.Backend, guest.Kernel, error) {
		return vmm.Launch{}, vmm.Command{}, nil, guest.Kernel{}, fmt.Errorf("vms.%s: %w", vm.Name, err)
	}
	b, err := Backend(vm.Hypervisor)
	if err != nil {
		return fail(err)
	}
	arch := env.arch()
	kern, err := guest.ResolveKernel(vm.Kernel, arch, vmm.HostArch(), env.KernelCache)
	if err != nil {
		return vmm.Launch{}, vmm.Command{}, nil, guest.Kernel{}, err
	}
	share, err := env.ShareKind(b)
	if err != nil {
		return fail(err)
	}
	l := vmm.DefaultLaunch(vm, env.StateDir, env.RunDir)
	if b.Name() != "qemu" {
		l.ControlSocket = filepath.Join(vmm.VMRunDir(env.RunDir, vm.Name), "api.sock")
	}
	// Each VM is given only its own image tree.
	img, err := ResolveImage(context.Background(), env, vm, false)
	pending := lenient && errors.Is(err, store.ErrNotFound)
	if pending {
		img, err = store.Image{ID: PendingTree}, nil
	}
	if err != nil {
		return vmm.Launch{}, vmm.Command{}, nil, guest.Kernel{}, err
	}
	tree := store.Open(env.StateDir).TreeDir(img.ID)
	l.Shares = []vmm.Share{{Tag: "store", Path: tree}}
	switch share {
	case vmm.ShareVirtiofs:
		l.Shares[0].VirtiofsSocket = filepath.Join(vmm.VMRunDir(env.RunDir, vm.Name), "store.sock")
	case vmm.ShareBlock:
		switch {
		case pending:
			l.Shares[0].Block = filepath.Join(BlockCache(env.StateDir), PendingTree+".ext4")
		case store.IsTreeID(img.ID):
			// A content-addressed tree never changes: its id is the key, no walk.
			l.Shares[0].Block = filepath.Join(BlockCache(env.StateDir), img.ID+".ext4")
		default: // a plain directory made by hand: keyed by walking it
			if l.Shares[0].Block, err = storeimage.Path(BlockCache(env.StateDir), tree); err != nil {
				return fail(err)
			}
		}
	}
	l.Arch = arch
	l.KVM = arch == vmm.HostArch() && vmm.HardwareKVM() && env.canOpen("/dev/kvm")
	l.VHostNet = l.KVM && env.canOpen("/dev/vhost-net")
	l.Kernel = kern.Image
	// The VM's own initramfs holds its SSH host key and secrets: it is made
	// in the VM's run directory (on a tmpfs on a real host) and removed
	// once the hypervisor has loaded it.
	l.Initrd = filepath.Join(vmm.VMRunDir(env.RunDir, vm.Name), "initramfs.cpio")
	if env.VMMUser != nil && b.Name() == "qemu" {
		// The TAP is opened as root and handed over on descriptor 3, so the
		// hypervisor needs neither /dev/net/tun nor the TAP's ownership.
		l.TAPFD = tapFD
	}
	cmd, err := b.Command(vm, l)
	if err != nil {
		return vmm.Launch{}, vmm.Command{}, nil, guest.Kernel{}, err
	}
	cmd.Binary = cmd.Argv[0]
	if env.VMMUser != nil {
		// QEMU's 9p server reads the image as the hypervisor's user: it may
		// read any file (an image's root-only files), and nothing else.
		var keep []string
		if share == vmm.Share9p {
			keep = []string{"dac_read_search"}
		}
		cmd.Argv = append(env.VMMUser.Prefix(keep...), cmd.Argv...)
	}
	if env.NetNS != "" {
		cmd.Argv = append([]string{"nsenter", "--net=" + env.NetNS, "--"}, cmd.Argv...)
	}
	return l, cmd, b, kern, nil
}

// Prepare makes everything vm needs to boot and returns the command line.
// On an error, the VM's initramfs (its host key and secrets) is not left
// behind.
func Prepare(env Env, vm *config.VM) (p *Prepared, err error) {
	arch := env.arch()
	vmDir := filepath.Join(env.StateDir, "vms", vm.Name)
	if err := os.MkdirAll(vmDir, 0o700); err != nil {
		return nil, err
	}
	img, err := ResolveImage(context.Background(), env, vm, true)
	if err != nil {
		return nil, err
	}
	l, cmd, b, kern, err := command(env, vm, false)
	if err != nil {
		return nil, err
	}
	if err := b.CheckKernel(kern.Image, arch); err != nil {
		return nil, fmt.Errorf("vms.%s: %w", vm.Name, err)
	}
	limits := Limits(vm)
	if !limits.IsZero() && env.Cgroups == nil {
		return nil, fmt.Errorf("vms.%s.limits: this host has no usable cgroups to enforce them", vm.Name)
	}
	if blk := l.Shares[0].Block; blk != "" {
		if _, err := storeimage.Ensure(blk, l.Shares[0].Path); err != nil {
			return nil, fmt.Errorf("vms.%s: %w", vm.Name, err)
		}
	}
	initBin, err := InitBinary(env.InitDir, arch)
	if err != nil {
		return nil, err
	}
	ir := guest.Initramfs{Init: initBin, CacheDir: filepath.Join(env.StateDir, "cache")}
	base, cached, err := ir.Base(kern)
	if err != nil {
		return nil, err
	}
	hostKey, hostPEM, err := sshkey.Ensure(filepath.Join(vmDir, "ssh_host_ed25519_key"), "microvm host key of "+vm.Name)
	if err != nil {
		return nil, fmt.Errorf("host key: %w", err)
	}
	client, _, err := sshkey.Ensure(ClientKeyPath(env.StateDir), "microvm")
	if err != nil {
		return nil, fmt.Errorf("client key: %w", err)
	}
	dns := env.DNS
	if len(dns) == 0 {
		dns = []string{"1.1.1.1"}
	}
	spec := &guest.Spec{
		Name: vm.Name,
		Net: guest.NetSpec{
			MAC:     vm.Net.MAC,
			Address: fmt.Sprintf("%s/%d", vm.Net.Address, vm.Net.Subnet.Bits()),
			Gateway: vm.Net.Gateway.String(),
			DNS:     dns,
		},
		Store: guest.ShareSpec{Tag: "store", FSType: "9p"},
		SSH: guest.SSHSpec{
			HostKey:        string(hostPEM),
			AuthorizedKeys: append([]string{sshkey.AuthorizedLine(client)}, vm.SSHKeys...),
		},
	}
	for _, v := range vm.Volumes {
		spec.Volumes = append(spec.Volumes, guest.VolumeSpec{Name: v.Name, MountPoint: v.MountPoint})
	}
	devices := b.DiskDevices(l)
	switch l.Shares[0].Kind() {
	case vmm.ShareVirtiofs:
		spec.Store.FSType = "virtiofs"
	case vmm.ShareBlock:
		spec.Store = guest.ShareSpec{FSType: "ext4", Serial: vmm.StoreSerial, Device: devices[vmm.StoreSerial]}
	}
	for i := range spec.Volumes {
		spec.Volumes[i].Device = devices[spec.Volumes[i].Name]
	}
	if spec.Secrets, err = env.Secrets(vm); err != nil {
		return nil, err
	}
	spec.SwitchRoot = vm.Init == config.InitImage
	if !spec.SwitchRoot {
		spec.Workload = Workload(vm, img.Config)
	}
	if err := makeRunDir(filepath.Dir(l.Initrd)); err != nil {
		return nil, fmt.Errorf("vms.%s: %w", vm.Name, err)
	}
	if err := guest.WriteVM(base, l.Initrd, spec); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.Remove(l.Initrd)
		}
	}()
	p = &Prepared{VM: vm, Backend: b, Launch: l, Argv: cmd.Argv, Binary: cmd.Binary, User: env.VMMUser, NetNS: env.NetNS,
		Files: cmd.Files, SerialToStdout: cmd.SerialToStdout,
		BaseCached: cached, Volumes: map[string]volume.Action{}, Cgroups: env.Cgroups,
		ClientKey: ClientKeyPath(env.StateDir), HostKeyPub: sshkey.AuthorizedLine(hostKey)}
	for _, v := range vm.Volumes {
		act, err := volume.Ensure(vmDir, v)
		if err != nil {
			return nil, err
		}
		p.Volumes[v.Name] = act
	}
	if err := os.MkdirAll(env.RunDir, 0o755); err != nil {
		return nil, err
	}
	if err := giveToVMM(env.VMMUser, vmDir, l); err != nil {
		return nil, fmt.Errorf("vms.%s: %w", vm.Name, err)
	}
	return p, nil
}

// makeRunDir makes a VM's run directory (sockets, initramfs): its parents
// open to all, itself root's alone until giveToVMM hands it over.
func makeRunDir(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return nil
}

// giveToVMM gives the hypervisor's user exactly what the hypervisor opens
// itself: the initramfs, the data volumes, the socket directory (and so
// nothing else of the state directory, whose VM directory it may only pass
// through). As root, the socket directory is root's.
func giveToVMM(u *vmmuser.User, vmDir string, l vmm.Launch) error {
	runDir := filepath.Dir(l.ConsoleSocket)
	if u == nil {
		return os.Chown(runDir, 0, 0)
	}
	// The hypervisor passes through the state directory to its VM's files:
	// microvm's own directories get search permission (never read or
	// write); one above them without it is an error that says so.
	vmsDir := filepath.Dir(vmDir)
	for _, d := range []string{filepath.Dir(vmsDir), vmsDir, vmDir} {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o011 != 0o011 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o011); err != nil {
				return err
			}
		}
	}
	for d := filepath.Dir(filepath.Dir(vmsDir)); ; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 == 0 && fi.Sys().(*syscall.Stat_t).Uid != u.UID {
			return fmt.Errorf("the hypervisors' user %s cannot pass through %s to the state directory (chmod o+x %s, or run hypervisors as root with --vmm-user root)", u.Name, d, d)
		}
		if d == "/" || d == "." {
			break
		}
	}
	paths := []string{runDir, l.Initrd}
	for _, d := range l.Disks {
		paths = append(paths, d.Path)
	}
	return u.Own(paths...)
}

// Running is a started hypervisor.
type Running struct {
	Prepared *Prepared
	Process  *os.Process
	// Started is when the process was started.
	Started time.Time
	// Exited is closed when the process has exited; ExitErr is then its error.
	Exited  chan struct{}
	ExitErr error
	// ProcStart is the process's start time (see ProcStartTime).
	ProcStart uint64
	console   int64
}

// VMMLog is the hypervisor's own output (and its helpers') for the VM
// whose directory is vmDir.
func VMMLog(vmDir string) string { return filepath.Join(vmDir, "vmm.log") }

// Limits are the cgroup caps of vm's hypervisor.
func Limits(vm *config.VM) cgroup.Limits {
	return cgroup.Limits{CPUWeight: vm.Limits.CPUWeight, CPUs: vm.Limits.CPUs, MemoryMax: int64(vm.Limits.Memory)}
}

// Start starts the hypervisor in its own session (so a signal to microvm's
// process group does not reach it), with its own output in vmm.log, inside
// the VM's cgroup when it has limits. A start that fails removes the VM's
// initramfs.
func Start(p *Prepared) (r *Running, err error) {
	defer func() {
		if err != nil {
			os.Remove(p.Launch.Initrd)
		}
	}()
	vmDir := filepath.Dir(p.Launch.ConsoleLog)
	// Keep the previous boot's console as console.log.1.
	os.Rename(p.Launch.ConsoleLog, p.Launch.ConsoleLog+".1")
	os.Remove(p.Launch.ControlSocket)
	for path, b := range p.Files {
		if err := state.WriteFile(path, b, 0o600); err != nil {
			return nil, fmt.Errorf("vms.%s: %w", p.VM.Name, err)
		}
		if p.User != nil {
			if err := p.User.Own(path); err != nil {
				return nil, fmt.Errorf("vms.%s: %w", p.VM.Name, err)
			}
		}
	}
	logf, err := os.OpenFile(VMMLog(vmDir), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	stdout := logf
	if p.SerialToStdout {
		if stdout, err = os.OpenFile(p.Launch.ConsoleLog, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND, 0o600); err != nil {
			return nil, err
		}
		defer stdout.Close()
	}
	if p.User != nil && !p.SerialToStdout {
		// The hypervisor appends to the console log as its own user.
		f, err := os.OpenFile(p.Launch.ConsoleLog, os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			return nil, err
		}
		f.Close()
		if err := p.User.Own(p.Launch.ConsoleLog); err != nil {
			return nil, err
		}
	}
	bin, err := exec.LookPath(p.Argv[0])
	if err != nil {
		return nil, fmt.Errorf("vms.%s: %s is not installed: %w", p.VM.Name, p.Argv[0], err)
	}
	if p.Binary != "" && p.Binary != p.Argv[0] {
		if _, err := exec.LookPath(p.Binary); err != nil {
			return nil, fmt.Errorf("vms.%s: %s is not installed (%s backend): %w", p.VM.Name, p.Binary, p.Backend.Name(), err)
		}
	}
	limits := Limits(p.VM)
	cmd := exec.Command(bin, p.Argv[1:]...)
	cmd.Stdout, cmd.Stderr = stdout, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if p.Cgroups != nil && limits.IsZero() {
		p.Cgroups.Remove(p.VM.Name) // limits removed from the file: no group
	}
	if p.Cgroups != nil && !limits.IsZero() {
		// (Re)created with this spec's limits, so changed limits apply.
		if err := p.Cgroups.Create(p.VM.Name, limits); err != nil {
			return nil, fmt.Errorf("vms.%s.limits: %w", p.VM.Name, err)
		}
		if dir := p.Cgroups.StartDir(p.VM.Name); dir != "" {
			// cgroup v2: the hypervisor starts inside its group (clone3).
			fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				return nil, fmt.Errorf("vms.%s.limits: %w", p.VM.Name, err)
			}
			defer unix.Close(fd)
			cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, fd
		}
	}
	if p.Launch.TAPFD != 0 {
		tap, err := openTAP(p.NetNS, p.VM.Net.TAP)
		if err != nil {
			return nil, fmt.Errorf("vms.%s: %w", p.VM.Name, err)
		}
		defer tap.Close() // the hypervisor has its own copy
		cmd.ExtraFiles = []*os.File{tap}
	}
	var helpers []*os.Process
	var helperDone []<-chan struct{}
	var vmmGone atomic.Bool
	killHelpers := func() {
		for _, h := range helpers {
			h.Kill() // reaped by startVirtiofsd's waiter
		}
	}
	for _, sh := range p.Launch.Shares {
		if sh.Kind() != vmm.ShareVirtiofs {
			continue
		}
		proc, done, err := startVirtiofsd(sh, p.User, logf)
		if err != nil {
			killHelpers()
			return nil, err
		}
		helpers = append(helpers, proc)
		helperDone = append(helperDone, done)
	}
	r = &Running{Prepared: p, Exited: make(chan struct{})}
	r.Started = time.Now()
	if err := cmd.Start(); err != nil {
		killHelpers()
		return nil, fmt.Errorf("start %s: %w", p.Argv[0], err)
	}
	if p.Cgroups != nil && !limits.IsZero() && !cmd.SysProcAttr.UseCgroupFD {
		// cgroup v1: moved in right after the start, before the guest runs
		// for long; a hypervisor that cannot be capped is not left running.
		if err := p.Cgroups.Place(p.VM.Name, cmd.Process.Pid); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			killHelpers()
			return nil, fmt.Errorf("vms.%s.limits: %w", p.VM.Name, err)
		}
	}
	r.Process = cmd.Process
	r.ProcStart, _ = ProcStartTime(cmd.Process.Pid)
	// A guest whose store server died cannot go on (its root is gone): the
	// hypervisor is stopped, and the supervisor restarts the VM by policy.
	for _, done := range helperDone {
		go func() {
			select {
			case <-done:
				if vmmGone.Load() {
					return // the hypervisor exited first and took its helpers
				}
				if f, err := os.OpenFile(VMMLog(vmDir), os.O_WRONLY|os.O_APPEND, 0); err == nil {
					fmt.Fprintln(f, "microvm: virtiofsd exited while the VM ran; stopping the hypervisor")
					f.Close()
				}
				r.Process.Signal(syscall.SIGTERM)
			case <-r.Exited:
			}
		}()
	}
	go func() {
		r.ExitErr = cmd.Wait()
		vmmGone.Store(true)
		os.Remove(p.Launch.Initrd) // never left behind, whatever happened
		// Helpers never outlive the hypervisor.
		killHelpers()
		if r.ExitErr != nil {
			if b, _ := os.ReadFile(VMMLog(vmDir)); len(b) > 0 {
				r.ExitErr = fmt.Errorf("%w: %s", r.ExitErr, strings.TrimSpace(string(b)))
			}
		}
		if p.Cgroups != nil && !limits.IsZero() {
			p.Cgroups.Remove(p.VM.Name)
		}
		close(r.Exited)
	}()
	return r, nil
}

// openTAP opens the TAP called name in the namespace at nsPath.
func openTAP(nsPath, name string) (*os.File, error) {
	h, err := hostnet.Open(nsPath)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return h.OpenTAP(name)
}

// startVirtiofsd serves a share read-only over vhost-user. virtiofsd has no
// read-only mode, so it runs in a private mount namespace where the tree is
// a read-only bind mount of itself: a guest that remounts its store
// read-write still cannot write through to the host.
// The returned channel is closed when virtiofsd exits.
//
// With an unprivileged hypervisor, the socket belongs to that user's group
// (virtiofsd's --socket-group) so the hypervisor can connect to it.
func startVirtiofsd(sh vmm.Share, u *vmmuser.User, log *os.File) (*os.Process, <-chan struct{}, error) {
	bin := Virtiofsd()
	os.Remove(sh.VirtiofsSocket)
	script := `mount --bind -o ro "$1" "$1" && exec "$2" --socket-path="$3" ${4:+--socket-group="$4"} -o source="$1" -o sandbox=namespace -o cache=always -o no_posix_lock -o no_flock`
	group := ""
	if u != nil {
		group = u.GroupName
	}
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", sh.Path, bin, sh.VirtiofsSocket, group)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start virtiofsd: %w", err)
	}
	exited := make(chan error, 1)
	done := make(chan struct{})
	go func() { err := cmd.Wait(); exited <- err; close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(sh.VirtiofsSocket); err == nil {
			return cmd.Process, done, nil
		}
		select {
		case err := <-exited:
			return nil, nil, fmt.Errorf("virtiofsd for %s exited: %v (see vmm.log)", sh.Path, err)
		default:
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			return nil, nil, fmt.Errorf("virtiofsd for %s did not create %s", sh.Path, sh.VirtiofsSocket)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// WaitReady waits for the guest's ready line on the console.
// The VM's initramfs (its host key, its secrets) is removed then: the
// hypervisor loaded it before the guest ran.
func (r *Running) WaitReady(timeout time.Duration, echo func(string)) (vmm.ReadyResult, error) {
	res, err := vmm.WaitConsole(r.Prepared.Launch.ConsoleLog, r.console, guest.ReadyPrefix, guest.FailedPrefix, timeout, r.Exited, echo)
	if err == nil {
		r.console = res.Offset
		os.Remove(r.Prepared.Launch.Initrd)
	}
	return res, err
}

// FollowConsole gives every console line after the ready line to echo until
// the hypervisor exits.
func (r *Running) FollowConsole(echo func(string)) {
	vmm.WaitConsole(r.Prepared.Launch.ConsoleLog, r.console, "\x00never", "\x00never", 100*365*24*time.Hour, r.Exited, echo)
}

// Stop asks the guest to shut down cleanly and waits up to timeout in all:
// first the backend's polite request (the ACPI power button for QEMU and
// cloud-hypervisor, Ctrl-Alt-Del for Firecracker), after a third of the
// time its second request (Ctrl-Alt-Del for QEMU, which microvm-init also
// takes as a shutdown request); then SIGTERM and, 5 s later, SIGKILL.
func (r *Running) Stop(timeout time.Duration) error {
	select {
	case <-r.Exited:
		return nil
	default:
	}
	b, l := r.Prepared.Backend, r.Prepared.Launch
	if err := b.Shutdown(l, 0); err != nil {
		r.Process.Signal(syscall.SIGTERM)
	}
	steps := []struct {
		wait time.Duration
		act  func()
	}{
		{timeout / 3, func() { b.Shutdown(l, 1) }},
		{timeout - timeout/3, func() { r.Process.Signal(syscall.SIGTERM) }},
		{5 * time.Second, func() { r.Process.Signal(syscall.SIGKILL) }},
	}
	for _, step := range steps {
		select {
		case <-r.Exited:
			return nil
		case <-time.After(step.wait):
			step.act()
		}
	}
	select {
	case <-r.Exited:
		return nil
	case <-time.After(5 * time.Second):
		return errors.New("the hypervisor did not exit after SIGKILL")
	}
}

// Record is the run record of a started VM.
func (r *Running) Record() state.RunRecord {
	return state.RunRecord{Name: r.Prepared.VM.Name, Spec: *r.Prepared.VM, PID: r.Process.Pid, ProcStart: r.ProcStart, StartedAt: r.Started}
}
