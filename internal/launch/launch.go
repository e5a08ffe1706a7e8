// Package launch prepares everything one VM boots from (kernel, initramfs
// with its spec, SSH identities, data volumes, console log) and starts,
// watches and stops its hypervisor process.
package launch

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/sshkey"
	"microvm.dev/microvm/internal/state"
	"microvm.dev/microvm/internal/vmm"
	"microvm.dev/microvm/internal/vmm/qemu"
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
	// Share is how the store reaches guests: "virtiofs", "9p", or "" (auto:
	// virtiofs when a virtiofsd is installed, else 9p).
	Share string
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

// shareType decides how the store is shared.
func (e Env) shareType() (string, error) {
	switch e.Share {
	case "9p":
		return "9p", nil
	case "virtiofs":
		if Virtiofsd() == "" {
			return "", fmt.Errorf("share virtiofs: no virtiofsd installed (looked in %v and PATH)", virtiofsdPaths)
		}
		return "virtiofs", nil
	case "", "auto":
		if Virtiofsd() != "" {
			return "virtiofs", nil
		}
		return "9p", nil
	}
	return "", fmt.Errorf("unknown share type %q (virtiofs, 9p or auto)", e.Share)
}

// Prepared is a VM ready to start.
type Prepared struct {
	VM         *config.VM
	Argv       []string
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

// ImageDir is the directory tree of a store image.
func ImageDir(stateDir, image string) (string, error) {
	if strings.ContainsAny(image, "/:@") {
		return "", fmt.Errorf("image %q: OCI images are pulled by the image store, which is not built yet; use a store image name", image)
	}
	dir := filepath.Join(stateDir, "store", image)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("image %q is not in the store (%s); build the base image with scripts/build-base-image.sh %s", image, dir, dir)
	}
	return dir, nil
}

// Command resolves what vm boots with and returns the hypervisor launch and
// command line, without writing anything: `microvm render runner` prints
// exactly what Prepare will run.
func Command(env Env, vm *config.VM) (vmm.Launch, []string, error) {
	l, argv, _, err := command(env, vm)
	return l, argv, err
}

// command is Command that also returns the resolved kernel, so Prepare
// resolves it once.
func command(env Env, vm *config.VM) (vmm.Launch, []string, guest.Kernel, error) {
	arch := env.arch()
	kern, err := guest.ResolveKernel(vm.Kernel, arch, vmm.HostArch(), env.KernelCache)
	if err != nil {
		return vmm.Launch{}, nil, guest.Kernel{}, err
	}
	share, err := env.shareType()
	if err != nil {
		return vmm.Launch{}, nil, guest.Kernel{}, err
	}
	l := vmm.DefaultLaunch(vm, env.StateDir, env.RunDir)
	// Each VM is given only its own image tree.
	l.Shares = []vmm.Share{{Tag: "store", Path: filepath.Join(env.StateDir, "store", vm.Image)}}
	if share == "virtiofs" {
		l.Shares[0].VirtiofsSocket = filepath.Join(env.RunDir, vm.Name+"-store.sock")
	}
	l.Arch = arch
	l.KVM = arch == vmm.HostArch() && unix.Access("/dev/kvm", unix.R_OK|unix.W_OK) == nil
	l.VHostNet = l.KVM && unix.Access("/dev/vhost-net", unix.R_OK|unix.W_OK) == nil
	l.Kernel = kern.Image
	l.Initrd = filepath.Join(env.StateDir, "vms", vm.Name, "initramfs.cpio")
	argv := qemu.Command(vm, l)
	if env.NetNS != "" {
		argv = append([]string{"nsenter", "--net=" + env.NetNS, "--"}, argv...)
	}
	return l, argv, kern, nil
}

// Prepare makes everything vm needs to boot and returns the command line.
func Prepare(env Env, vm *config.VM) (*Prepared, error) {
	arch := env.arch()
	vmDir := filepath.Join(env.StateDir, "vms", vm.Name)
	if err := os.MkdirAll(vmDir, 0o700); err != nil {
		return nil, err
	}
	if _, err := ImageDir(env.StateDir, vm.Image); err != nil {
		return nil, err
	}
	l, argv, kern, err := command(env, vm)
	if err != nil {
		return nil, err
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
	if l.Shares[0].VirtiofsSocket != "" {
		spec.Store.FSType = "virtiofs"
	}
	spec.SwitchRoot = vm.Init == config.InitImage
	if len(vm.Command) > 0 && !spec.SwitchRoot {
		spec.Workload = &guest.Workload{Command: vm.Command, Env: vm.Env, Workdir: vm.Workdir, User: vm.User}
	}
	if err := guest.WriteVM(base, l.Initrd, spec); err != nil {
		return nil, err
	}
	p := &Prepared{VM: vm, Launch: l, Argv: argv, BaseCached: cached, Volumes: map[string]volume.Action{},
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
	return p, nil
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

// Start starts the hypervisor in its own session (so a signal to microvm's
// process group does not reach it), with its own output in qemu.log.
func Start(p *Prepared) (*Running, error) {
	vmDir := filepath.Dir(p.Launch.ConsoleLog)
	// Keep the previous boot's console as console.log.1.
	os.Rename(p.Launch.ConsoleLog, p.Launch.ConsoleLog+".1")
	os.Remove(p.Launch.ControlSocket)
	logf, err := os.OpenFile(filepath.Join(vmDir, "qemu.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	bin, err := exec.LookPath(p.Argv[0])
	if err != nil {
		return nil, fmt.Errorf("%s is not installed: %w", p.Argv[0], err)
	}
	var helpers []*os.Process
	for _, sh := range p.Launch.Shares {
		if sh.VirtiofsSocket == "" {
			continue
		}
		proc, err := startVirtiofsd(sh, logf)
		if err != nil {
			for _, h := range helpers {
				h.Kill()
			}
			return nil, err
		}
		helpers = append(helpers, proc)
	}
	cmd := exec.Command(bin, p.Argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	r := &Running{Prepared: p, Exited: make(chan struct{})}
	r.Started = time.Now()
	if err := cmd.Start(); err != nil {
		for _, h := range helpers {
			h.Kill()
		}
		return nil, fmt.Errorf("start %s: %w", p.Argv[0], err)
	}
	r.Process = cmd.Process
	r.ProcStart, _ = ProcStartTime(cmd.Process.Pid)
	go func() {
		r.ExitErr = cmd.Wait()
		// Helpers never outlive the hypervisor.
		for _, h := range helpers {
			h.Kill() // reaped by startVirtiofsd's waiter
		}
		if r.ExitErr != nil {
			if b, _ := os.ReadFile(filepath.Join(vmDir, "qemu.log")); len(b) > 0 {
				r.ExitErr = fmt.Errorf("%w: %s", r.ExitErr, strings.TrimSpace(string(b)))
			}
		}
		close(r.Exited)
	}()
	return r, nil
}

// startVirtiofsd serves a share read-only over vhost-user. virtiofsd has no
// read-only mode, so it runs in a private mount namespace where the tree is
// a read-only bind mount of itself: a guest that remounts its store
// read-write still cannot write through to the host.
func startVirtiofsd(sh vmm.Share, log *os.File) (*os.Process, error) {
	bin := Virtiofsd()
	os.Remove(sh.VirtiofsSocket)
	script := `mount --bind -o ro "$1" "$1" && exec "$2" --socket-path="$3" -o source="$1" -o sandbox=namespace -o cache=always -o no_posix_lock -o no_flock`
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", sh.Path, bin, sh.VirtiofsSocket)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start virtiofsd: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(sh.VirtiofsSocket); err == nil {
			return cmd.Process, nil
		}
		select {
		case err := <-exited:
			return nil, fmt.Errorf("virtiofsd for %s exited: %v (see qemu.log)", sh.Path, err)
		default:
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			return nil, fmt.Errorf("virtiofsd for %s did not create %s", sh.Path, sh.VirtiofsSocket)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// WaitReady waits for the guest's ready line on the console.
func (r *Running) WaitReady(timeout time.Duration, echo func(string)) (vmm.ReadyResult, error) {
	res, err := vmm.WaitConsole(r.Prepared.Launch.ConsoleLog, r.console, guest.ReadyPrefix, guest.FailedPrefix, timeout, r.Exited, echo)
	if err == nil {
		r.console = res.Offset
	}
	return res, err
}

// FollowConsole gives every console line after the ready line to echo until
// the hypervisor exits.
func (r *Running) FollowConsole(echo func(string)) {
	vmm.WaitConsole(r.Prepared.Launch.ConsoleLog, r.console, "\x00never", "\x00never", 100*365*24*time.Hour, r.Exited, echo)
}

// Stop asks the guest to shut down cleanly and waits up to timeout in all:
// first the ACPI power button through QMP, then (after a third of the time)
// Ctrl-Alt-Del, which microvm-init also takes as a shutdown request; then
// SIGTERM and, 5 s later, SIGKILL to the hypervisor.
func (r *Running) Stop(timeout time.Duration) error {
	select {
	case <-r.Exited:
		return nil
	default:
	}
	qmp := r.Prepared.Launch.ControlSocket
	if _, err := qemu.QMP(qmp, "system_powerdown", nil, 5*time.Second); err != nil {
		r.Process.Signal(syscall.SIGTERM)
	}
	cad := map[string]any{"keys": []map[string]string{
		{"type": "qcode", "data": "ctrl"}, {"type": "qcode", "data": "alt"}, {"type": "qcode", "data": "delete"}}}
	steps := []struct {
		wait time.Duration
		act  func()
	}{
		{timeout / 3, func() { qemu.QMP(qmp, "send-key", cad, 5*time.Second) }},
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
