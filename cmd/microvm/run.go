package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"microvm.dev/microvm/internal/apiserver"
	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/hostnet"
	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/network"
	"microvm.dev/microvm/internal/radv"
	"microvm.dev/microvm/internal/resolver"
	"microvm.dev/microvm/internal/state"
	"microvm.dev/microvm/internal/steps"
	"microvm.dev/microvm/internal/vmm"
	"microvm.dev/microvm/internal/vmmuser"
)

// runOptions are the flags of `microvm run`.
type runOptions struct {
	file        string
	initDir     string
	kernelCache string
	arch        string
	share       string
	readyWait   time.Duration
	stopTimeout time.Duration
	quiet       bool
	verbose     bool
	vmmUser     string
	vmmUserSet  func() bool
	vmmIDs      string
	vmmConfine  string
	identities  []string
	imageKeys   []string
}

func (a *app) runCommand() *cobra.Command {
	var o runOptions
	cmd := &cobra.Command{
		Use:   "run VM",
		Short: "Boot one VM of the file in the foreground (Ctrl-C shuts it down cleanly)",
		Long: `Run applies the file's host network, creates the VM's volumes if needed, writes
its initramfs and boots it with its hypervisor in the foreground, echoing the
serial console. It says when the guest is ready and how to reach it over SSH.
Ctrl-C presses the VM's power button and waits for a clean shutdown.`,
		Example: "  microvm run vm2 -f examples/reference/infra.yaml",
		Args:    exactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return a.run(args[0], o)
		},
	}
	fileFlag(cmd, &o.file)
	launchFlags(cmd, &o)
	cmd.Flags().DurationVar(&o.readyWait, "ready-timeout", 3*time.Minute, "how long the guest may take to become ready")
	cmd.Flags().DurationVar(&o.stopTimeout, "stop-timeout", 30*time.Second, "how long a clean shutdown may take before the hypervisor is killed")
	cmd.Flags().BoolVarP(&o.quiet, "quiet", "q", false, "do not echo the serial console")
	cmd.Flags().BoolVarP(&o.verbose, "verbose", "v", false, "print each launch step with its time")
	return cmd
}

// launchFlags adds the flags that say where kernels and microvm-init are.
func launchFlags(cmd *cobra.Command, o *runOptions) {
	cmd.Flags().StringVar(&o.initDir, "init-dir", defaultInitDir(), "directory holding microvm-init (and microvm-init.<arch> for other guest architectures)")
	cmd.Flags().StringVar(&o.kernelCache, "kernel-cache", guest.DefaultKernelCache, "where scripts/fetch-kernel.sh keeps kernels")
	cmd.Flags().StringVar(&o.arch, "arch", vmm.HostArch(), "guest architecture: x86_64 or aarch64")
	cmd.Flags().StringVar(&o.share, "share", "auto", "how the store reaches guests: virtiofs, 9p, block (a read-only disk image) or auto (the hypervisor's first choice available)")
	vmmUserFlags(cmd, o)
	cmd.Flags().StringVar(&o.vmmConfine, "vmm-confine", "auto", "shut each unprivileged hypervisor into a root of its own (only its VM's files) in new mount and PID namespaces: auto (when hypervisors run as --vmm-user) or off")
	identityFlag(cmd.Flags(), &o.identities)
	cmd.Flags().StringArrayVar(&o.imageKeys, "image-key", nil, "a cosign public key file every VM's image from a registry must be signed by, whatever the file's imagePolicy says (repeatable: any one; local images then need image import --trust)")
}

// vmmUserFlags adds the flags that say who hypervisors run as.
func vmmUserFlags(cmd *cobra.Command, o *runOptions) {
	cmd.Flags().StringVar(&o.vmmUser, "vmm-user", vmmuser.DefaultName, "the unprivileged user hypervisors run as, without capabilities (root: as root; when the default user does not exist, root with a warning)")
	o.vmmUserSet = func() bool { return cmd.Flags().Changed("vmm-user") }
	cmd.Flags().StringVar(&o.vmmIDs, "vmm-ids", "auto", "ids for one identity per VM's hypervisor: START:COUNT, auto (the --vmm-user's range in /etc/subuid and /etc/subgid, when it has one) or off (every hypervisor runs as --vmm-user)")
}

// PackagedInitDir is where the Debian package installs microvm-init.
const PackagedInitDir = "/usr/libexec/microvm"

// defaultInitDir is the directory of the running binary when microvm-init
// is next to it (a build tree), else the packaged location.
func defaultInitDir() string {
	self, err := os.Executable()
	if err == nil {
		if _, err := os.Stat(filepath.Join(filepath.Dir(self), "microvm-init")); err == nil {
			return filepath.Dir(self)
		}
	}
	if _, err := os.Stat(filepath.Join(PackagedInitDir, "microvm-init")); err == nil {
		return PackagedInitDir
	}
	if err == nil {
		return filepath.Dir(self)
	}
	return PackagedInitDir
}

// launchEnv is the launch environment the flags describe.
func (a *app) launchEnv(o runOptions) (launch.Env, error) {
	return a.newEnv(a.launchOptions(o))
}

// newEnv is launch.NewEnv(o), its warnings on stderr, a bad option a
// usage error.
func (a *app) newEnv(o launch.Options) (launch.Env, error) {
	env, warnings, err := launch.NewEnv(o)
	if errors.Is(err, launch.ErrOption) {
		return env, usageError{err}
	}
	for _, w := range warnings {
		fmt.Fprintln(a.stderr, "warning:", w)
	}
	return env, err
}

// launchOptions are the launch flags o and the global ones.
func (a *app) launchOptions(o runOptions) launch.Options {
	return launch.Options{
		StateDir: a.stateDir, RunDir: filepath.Dir(a.socket), NetNS: a.netns,
		KernelCache: o.kernelCache, InitDir: o.initDir, Arch: o.arch, Share: o.share,
		VMMUser: o.vmmUser, VMMUserNamed: o.vmmUserSet != nil && o.vmmUserSet(), VMMIDs: o.vmmIDs, VMMConfine: o.vmmConfine,
		Identities: o.identities, ImageKeys: o.imageKeys, APIGroup: apiserver.SocketGroup,
	}
}

func (a *app) run(name string, o runOptions) error {
	cfg, err := a.load(o.file, false)
	if err != nil {
		return err
	}
	vm := cfg.VM(name)
	if vm == nil {
		return fmt.Errorf("no VM named %q in %s", name, o.file)
	}
	env, err := a.launchEnv(o)
	if err != nil {
		return err
	}
	m, err := network.New(a.netns, hostnet.Options{TAPOwner: env.TAPOwner()})
	if err != nil {
		return err
	}
	m.OwnTAPs(env.TAPOwners)
	res, err := m.Apply(cfg)
	m.Close()
	if err != nil {
		return err
	}
	for _, w := range res.Warnings {
		fmt.Fprintln(a.stderr, "warning:", w)
	}
	// The VM's resolver is its gateway, as under the daemon, for as long
	// as it runs in the foreground.
	dns, err := resolver.ForFleet(nil, cfg, a.netns, slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Fprintln(a.stderr, "warning: the VM's DNS:", err)
	}
	if dns != nil {
		defer dns.Close()
	}
	if adv, err := radv.New(a.netns, nil); err != nil {
		fmt.Fprintln(a.stderr, "warning: the VM's router advertisements:", err)
	} else {
		adv.Update(radv.Networks(cfg))
		defer adv.Close()
	}
	var observe func(steps.Timing)
	if o.verbose {
		observe = func(t steps.Timing) {
			fmt.Fprintln(a.stderr, stepLine(t))
		}
	}
	// Ctrl-C while preparing (a pull, say) cancels the launch and undoes it.
	ctx, stopPrep := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stopPrep()
	t0 := time.Now()
	p, err := launch.Prepare(ctx, env, vm, observe)
	if err != nil {
		return err
	}
	for vol, act := range p.Volumes {
		fmt.Fprintf(a.stderr, "volume %s: %s\n", vol, act)
	}
	for _, w := range p.Warnings {
		fmt.Fprintln(a.stderr, "warning:", w)
	}
	fmt.Fprintf(a.stderr, "prepared %s in %s (initramfs base cached: %v): %s\n", name, time.Since(t0).Round(time.Millisecond), p.BaseCached, p.Boot)
	r, err := launch.Start(ctx, p)
	if err != nil {
		return err
	}
	stopPrep()
	d := state.Dir{Root: a.stateDir}
	if err := d.WriteRunRecord(r.Record()); err != nil {
		r.Stop(o.stopTimeout)
		return err
	}
	defer func() {
		rec := r.Record()
		rec.PID = 0
		d.WriteRunRecord(rec)
	}()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	echo := func(line string) {
		if !o.quiet {
			fmt.Fprintln(a.stdout, line)
		}
	}
	ready, err := r.AwaitReady(o.readyWait, echo)
	if err != nil {
		r.Stop(o.stopTimeout)
		return fmt.Errorf("%s: %w", name, err)
	}
	fmt.Fprintf(a.stderr, "%s is ready: %s after start (guest uptime %ss); ssh -i %s root@%s\n",
		name, time.Since(r.Started).Round(time.Millisecond), ready.GuestUptime, p.ClientKey, vm.Net.Address)
	go r.FollowConsole(echo)
	select {
	case <-r.Exited:
		return r.ExitErr
	case s := <-sigs:
		fmt.Fprintf(a.stderr, "%s: shutting %s down\n", s, name)
		if err := r.Stop(o.stopTimeout); err != nil {
			return err
		}
		return nil
	}
}
