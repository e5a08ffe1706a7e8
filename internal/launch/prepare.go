package launch

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"microvm.dev/microvm/internal/cgroup"
	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/moddisk"
	"microvm.dev/microvm/internal/sshkey"
	"microvm.dev/microvm/internal/steps"
	"microvm.dev/microvm/internal/store"
	"microvm.dev/microvm/internal/storeimage"
	"microvm.dev/microvm/internal/vmm"
	"microvm.dev/microvm/internal/vmssh"
	"microvm.dev/microvm/internal/volume"
)

// Prepared is a VM ready to start.
type Prepared struct {
	VM *config.VM
	// Backend is the VM's hypervisor.
	Backend vmm.Backend
	// Resolved is how it boots (Backend, Launch and Argv repeat its parts).
	Resolved *Resolved
	// Argv is the command line, binary first (after nsenter when the VM
	// runs in a network namespace, and setpriv when it runs unprivileged).
	Argv   []string
	Launch vmm.Launch
	// Volumes says what was done to each data volume.
	Volumes map[string]volume.Action
	// BaseCached says the shared initramfs base came from the cache.
	BaseCached bool
	// ClientKey is microvm's own SSH key, authorized in the VM.
	ClientKey string
	// HostKeyPub is the VM's SSH host key (authorized_keys format).
	HostKeyPub string
	// Boot says whether the guest resumes a saved state, or why one was
	// dropped.
	Boot Boot
	// Warnings are what the VM will run but should know (an image's data
	// directory no volume covers).
	Warnings []string

	env    Env
	layout vmm.Layout
	// identity is a clone's identity disk's content (nil for other VMs).
	identity *guest.Identity
	// initBase names the shared initramfs base the guest boots from: its
	// content hash, microvm-init's with the kernel's modules.
	initBase string
	// run holds the undo of every step done so far, until the guest runs.
	run *steps.Runner
}

// dropHostCopies removes what carries the guest's host key and secrets
// to it: its initramfs and a clone's identity disk (read by the guest by
// then, or never to be).
func (p *Prepared) dropHostCopies() {
	os.Remove(p.Launch.Initrd)
	if t := p.Launch.Template; t != nil && t.Clone {
		os.Remove(t.Identity)
	}
}

// Layout names the VM's files and sockets.
func (p *Prepared) Layout() vmm.Layout { return p.layout }

// Timings are how long each step of the launch took so far.
func (p *Prepared) Timings() []steps.Timing { return p.run.Timings() }

// Limits are the cgroup caps of vm's hypervisor.
func Limits(vm *config.VM) cgroup.Limits {
	return cgroup.Limits{CPUWeight: vm.Limits.CPUWeight, CPUs: vm.Limits.CPUs, MemoryMax: int64(vm.Limits.Memory)}
}

// preparer is one Prepare: what its steps found for the later ones.
type preparer struct {
	p          *Prepared
	arch       string
	kern       guest.Kernel
	initBin    string
	secrets    []guest.SecretFile
	base       string
	hostPEM    []byte
	authorized []string
}

// Prepare makes everything vm needs to boot, as ordered steps: the cheap
// checks first (backend, kernel, limits, microvm-init, secrets), then the
// image (pulled if the policy says so; cancelling ctx cancels the pull)
// and what is written (store block image, initramfs base, keys, volumes,
// the VM's initramfs, ownership). observe, when set, is told each step's
// timing. On an error nothing that holds the VM's secrets is left behind.
func Prepare(ctx context.Context, env Env, vm *config.VM, observe func(steps.Timing)) (*Prepared, error) {
	p := &Prepared{VM: vm, env: env, layout: env.Layout(vm.Name), run: &steps.Runner{Observe: observe}, Volumes: map[string]volume.Action{}}
	pr := &preparer{p: p, arch: env.arch()}
	err := p.run.Run(ctx,
		steps.Step{Name: "hypervisor identity", Do: pr.identity},
		steps.Step{Name: "check backend", Do: pr.checkBackend},
		steps.Step{Name: "find microvm-init", Do: pr.findInit},
		steps.Step{Name: "decrypt secrets", Do: pr.decryptSecrets},
		steps.Step{Name: "resolve image", Do: pr.resolveImage},
		steps.Step{Name: "check image", Do: pr.checkImage},
		steps.Step{Name: "store block image", Do: pr.storeBlock},
		steps.Step{Name: "initramfs base", Do: pr.initramfsBase},
		steps.Step{Name: "kernel modules disk", Do: pr.modulesDisk},
		steps.Step{Name: "ssh keys", Do: pr.sshKeys},
		// Volumes are never removed by an undo: a volume holds data.
		steps.Step{Name: "volumes", Do: pr.volumes},
		steps.Step{Name: "initramfs", Do: pr.initramfs, Undo: func() { os.Remove(p.Launch.Initrd) }},
		steps.Step{Name: "template files", Do: pr.templateFiles, Undo: p.dropHostCopies},
		steps.Step{Name: "hand over to the hypervisor's user", Do: pr.handOver},
		steps.Step{Name: "saved state", Do: pr.savedState},
	)
	if err != nil {
		return nil, err
	}
	return p, nil
}

func (pr *preparer) fail(err error) error { return fmt.Errorf("vms.%s: %w", pr.p.VM.Name, err) }

// identity gives the VM's hypervisor its own id when the hypervisors have
// a range (recorded in the VM's directory, so it keeps it).
func (pr *preparer) identity(context.Context) error {
	_, err := pr.p.env.vmmUser(hypervisorUser(pr.p.VM), true)
	return err
}

// checkBackend resolves the VM on a placeholder image, before anything
// slow, so a wrong backend, kernel, share or missing cgroups fail at once.
func (pr *preparer) checkBackend(context.Context) error {
	vm := pr.p.VM
	r, err := Resolve(pr.p.env, vm, store.Image{ID: PendingTree})
	if err != nil {
		return err
	}
	pr.p.Backend, pr.kern = r.Backend, r.Kernel
	if err := r.Backend.CheckKernel(r.Launch.Kernel, pr.arch); err != nil {
		return pr.fail(err)
	}
	if _, err := guest.CheckRelease(r.Kernel); err != nil {
		return pr.fail(err)
	}
	if !Limits(vm).IsZero() && pr.p.env.Cgroups == nil {
		return fmt.Errorf("vms.%s.limits: this host has no usable cgroups to enforce them", vm.Name)
	}
	return nil
}

func (pr *preparer) findInit(context.Context) (err error) {
	pr.initBin, err = InitBinary(pr.p.env.InitDir, pr.arch)
	return err
}

func (pr *preparer) decryptSecrets(context.Context) (err error) {
	pr.secrets, err = pr.p.env.Secrets(pr.p.VM)
	return err
}

func (pr *preparer) resolveImage(ctx context.Context) error {
	p := pr.p
	img, err := ResolveImage(ctx, p.env, p.VM, true)
	if err != nil {
		return err
	}
	if err := dropPins(p.layout.Dir()); err != nil {
		return pr.fail(err)
	}
	if p.Resolved, err = Resolve(p.env, p.VM, img); err != nil {
		return err
	}
	p.Argv, p.Launch = p.Resolved.Command.Argv, p.Resolved.Launch
	return nil
}

// checkImage checks that the image can run what the VM asks (its init,
// or its workload's command and user) and warns of the data directories it
// declares that no volume covers.
func (pr *preparer) checkImage(context.Context) error {
	res := pr.p.Resolved
	if err := CheckImage(pr.p.VM, res.Image, res.Launch.Shares[0].Path); err != nil {
		return err
	}
	pr.p.Warnings = imageVolumeWarnings(pr.p.VM, res.Image.Config)
	return nil
}

func (pr *preparer) storeBlock(context.Context) error {
	sh := pr.p.Launch.Shares[0]
	if sh.Block == "" {
		return nil
	}
	if _, err := storeimage.Ensure(sh.Block, sh.Path); err != nil {
		return pr.fail(err)
	}
	return nil
}

func (pr *preparer) initramfsBase(context.Context) (err error) {
	ir := guest.Initramfs{Init: pr.initBin, CacheDir: filepath.Join(pr.p.env.StateDir, "cache")}
	pr.base, pr.p.BaseCached, err = ir.Base(pr.kern)
	pr.p.initBase = filepath.Base(pr.base)
	return err
}

// modulesDisk builds the disk image of the kernel's module tree the first
// time a VM boots that kernel.
func (pr *preparer) modulesDisk(context.Context) error {
	if pr.p.Launch.Modules == "" {
		return nil
	}
	if _, err := moddisk.Ensure(pr.p.Launch.Modules, pr.kern.Modules); err != nil {
		return pr.fail(err)
	}
	return nil
}

func (pr *preparer) sshKeys(context.Context) error {
	p := pr.p
	if err := os.MkdirAll(p.layout.Dir(), 0o700); err != nil {
		return err
	}
	hostKey, pem, err := sshkey.Ensure(p.layout.HostKey(), "microvm host key of "+p.VM.Name)
	if err != nil {
		return fmt.Errorf("host key: %w", err)
	}
	p.ClientKey = vmssh.ClientKeyPath(p.env.StateDir)
	client, _, err := sshkey.Ensure(p.ClientKey, "microvm")
	if err != nil {
		return fmt.Errorf("client key: %w", err)
	}
	pr.hostPEM, p.HostKeyPub = pem, sshkey.AuthorizedLine(hostKey)
	pr.authorized = append([]string{sshkey.AuthorizedLine(client)}, p.VM.SSHKeys...)
	return nil
}

func (pr *preparer) volumes(context.Context) error {
	for _, v := range pr.p.VM.Volumes {
		act, err := volume.Ensure(pr.p.layout.Dir(), v)
		if err != nil {
			return err
		}
		pr.p.Volumes[v.Name] = act
	}
	return nil
}

// initramfs writes the VM's own initramfs (the shared base with its spec,
// host key and secrets) into its run directory.
func (pr *preparer) initramfs(context.Context) error {
	p := pr.p
	if err := makeRunDir(p.layout.Run()); err != nil {
		return pr.fail(err)
	}
	secrets := pr.secrets
	if t := p.Launch.Template; t != nil && t.Clone {
		secrets = nil // a clone never boots this: its own go on its identity disk
	}
	spec := guestSpec(p.env, p.VM, p.Resolved, p.Volumes, pr.hostPEM, pr.authorized, secrets)
	if err := guest.WriteVM(pr.base, p.Launch.Initrd, spec); err != nil {
		os.Remove(p.Launch.Initrd)
		return err
	}
	return nil
}

func (pr *preparer) handOver(context.Context) error {
	if err := os.MkdirAll(pr.p.env.RunDir, 0o755); err != nil {
		return err
	}
	if err := giveToVMM(pr.p.Resolved.User, pr.p.layout, pr.p.Launch); err != nil {
		return pr.fail(err)
	}
	return nil
}
