// Command bootbench measures how fast a microvm guest boots (run as root,
// after building bin/microvm-init and a base image): the initramfs base
// archive built cold and reused from the cache; over -boots rounds, side by
// side, a VM booted cold as microvm boots it (the PVH vmlinux on the
// microvm machine), on q35, and as the bzImage on q35 (hypervisor start to
// the guest's ready line and to the first SSH command answered); the same
// VM saved and resumed (hypervisor start to resumed and to SSH); and each
// machine's kernel-only limit: the same QEMU and kernel with an initramfs
// whose init powers off at once. It prints medians, p90s and the ratios.
// With -compare-init, boots with another microvm-init build alternate with
// them (a change to the guest's boot, side by side); with -systemd-image,
// a distribution image with its own init boots cold and resumed; with
// -module-boots, a busybox VM boots with and without the kernel's module
// tree disk; with -machine-images, systemd images boot with their own init,
// each against its own systemd-analyze.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/u-root/u-root/pkg/cpio"

	"microvm.dev/microvm/bench/lab"
	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/vmm"
	"microvm.dev/microvm/internal/vmm/qemu"
	"microvm.dev/microvm/internal/vmssh"
)

const vmConfig = `
host: { externalInterface: auto }
vms:
  vm1:
    index: 1
    vcpu: 2
    memory: 1G
    store: block
    volumes: [{ name: data, mountPoint: /mnt/storage, size: 1G }]
`

func main() {
	boots := flag.Int("boots", 10, "number of boots")
	builds := flag.Int("builds", 5, "initramfs builds of each kind")
	initDir := flag.String("init-dir", "bin", "directory holding microvm-init")
	store := flag.String("store", "", "a store directory holding the base image (store/base)")
	compareInit := flag.String("compare-init", "", "a directory holding another microvm-init (an earlier build): its PVH boots are measured side by side")
	systemdImage := flag.String("systemd-image", "", "an image whose /sbin/init is systemd, imported into the state directory holding -store: booted with init: image, cold and resumed")
	imageBoots := flag.Int("image-boots", 3, "boots of -systemd-image")
	moduleBoots := flag.Int("module-boots", 0, "boots of a busybox VM with and without the kernel's module tree disk, alternating (0: none)")
	machineImages := flag.String("machine-images", "", "images with systemd as /sbin/init (comma-separated), booted with init: image alternately: ready against systemd-analyze")
	machineBoots := flag.Int("machine-boots", 3, "boots of each -machine-images image")
	flag.Parse()
	if *moduleBoots > 0 {
		if err := runModules(*moduleBoots, *initDir, *store); err != nil {
			fmt.Fprintln(os.Stderr, "bootbench:", err)
			os.Exit(1)
		}
	}
	if *machineImages != "" {
		if err := runMachines(*machineBoots, *initDir, *store, strings.Split(*machineImages, ",")); err != nil {
			fmt.Fprintln(os.Stderr, "bootbench:", err)
			os.Exit(1)
		}
	}
	if *boots > 0 { // -boots 0: only the -systemd-image boots
		if err := run(*boots, *builds, *initDir, *store, *compareInit); err != nil {
			fmt.Fprintln(os.Stderr, "bootbench:", err)
			os.Exit(1)
		}
	}
	if *systemdImage == "" {
		return
	}
	if err := runImage(*imageBoots, *initDir, *store, *systemdImage); err != nil {
		fmt.Fprintln(os.Stderr, "bootbench:", err)
		os.Exit(1)
	}
}

func run(boots, builds int, initDir, store, compareInit string) error {
	l, err := lab.NewLaunch("bootbench", store, initDir, vmConfig)
	if err != nil {
		return err
	}
	defer l.Close()
	env, cfg, nsPath, st := l.Env, l.Config, l.NetNS, l.Env.StateDir
	kern, err := guest.ResolveKernel(config.Kernel{}, vmm.HostArch(), vmm.HostArch(), guest.DefaultKernelCache)
	if err != nil {
		return err
	}
	initBin, err := launch.InitBinary(initDir, vmm.HostArch())
	if err != nil {
		return err
	}
	var cold, cached []time.Duration
	for i := range builds {
		ir := guest.Initramfs{Init: initBin, CacheDir: filepath.Join(st, fmt.Sprintf("cold%d", i))}
		t0 := time.Now()
		if _, _, err := ir.Base(kern); err != nil {
			return err
		}
		cold = append(cold, time.Since(t0))
		t0 = time.Now()
		if _, hit, err := ir.Base(kern); err != nil || !hit {
			return fmt.Errorf("cache miss: %v", err)
		}
		cached = append(cached, time.Since(t0))
	}
	fmt.Printf("kvm: %v, kernel %s\n", vmm.HostArch() == vmm.ArchX86_64 && canKVM(), kern.Image)
	fmt.Printf("%-40s median %-10s p90 %s\n", "initramfs base build (cold)", med(cold), p90(cold))
	fmt.Printf("%-40s median %-10s p90 %s\n", "initramfs base lookup (cached)", med(cached), p90(cached))

	limitInitrd := filepath.Join(st, "poweroff.cpio")
	if err := writePoweroffInitrd(limitInitrd); err != nil {
		return err
	}
	// Round by round, in one run, each kind of cold boot, the kernel-only
	// limit of each machine and kernel, and a resume of the default boot's
	// saved state.
	tscKHz := vmm.HostTSCKHz()
	kinds := []kind{
		// What microvm boots: the PVH vmlinux, on the microvm machine where
		// the host's TSC frequency is known.
		{name: "pvh, microvm machine", save: true, machine: qemu.MachineTCGMicrovm, cmdline: qemu.TSCArgs(tscKHz)},
		{name: "pvh, q35", q35: true, machine: qemu.MachineTCGQ35},
		{name: "bzImage, q35 (before issue 18)", q35: true, bzImage: true, machine: qemu.MachineTCGQ35},
	}
	if tscKHz == 0 {
		kinds = kinds[1:]
		kinds[0].save = true
	}
	if compareInit != "" {
		prev := kinds[0]
		prev.name, prev.initDir, prev.save, prev.machine = kinds[0].name+", -compare-init's microvm-init", compareInit, false, ""
		kinds = append(kinds, prev)
	}
	times := samples{}
	add := times.add
	var saveBytes int64
	for range boots {
		for _, k := range kinds {
			env.BzImage, env.Q35, env.InitDir = k.bzImage, k.q35, initDir
			if k.initDir != "" {
				env.InitDir = k.initDir
			}
			r, err := boot(env, cfg.VM("vm1"), nsPath, k.name, add)
			if err != nil {
				return err
			}
			if k.save {
				t1 := time.Now()
				res, err := r.Save()
				if err != nil {
					return err
				}
				add("save", time.Since(t1))
				saveBytes = res.Bytes
				if r, err = boot(env, cfg.VM("vm1"), nsPath, "resume", add); err != nil {
					return err
				}
				if r.Prepared.Boot.Resume == nil {
					return fmt.Errorf("not resumed: %s", r.Prepared.Boot)
				}
			}
			t1 := time.Now()
			if err := r.Stop(30 * time.Second); err != nil {
				return err
			}
			add(k.name+" stop", time.Since(t1))
			if k.machine == "" {
				continue // the same kernel and machine as another kind
			}
			p, err := launch.Command(env, cfg.VM("vm1"))
			if err != nil {
				return err
			}
			d, err := kernelOnly(p.Launch.Kernel, limitInitrd, k.machine, k.cmdline...)
			if err != nil {
				return err
			}
			add(k.name+" limit", d)
		}
	}
	row := func(what, k string) {
		if len(times[k]) > 0 {
			fmt.Printf("  %-52s median %-10s p90 %s\n", what, med(times[k]), p90(times[k]))
		}
	}
	for _, k := range kinds {
		fmt.Printf("cold boot, kernel as %s (%d boots):\n", k.name, boots)
		row("prepare (initramfs, keys, volume)", k.name+" prepare")
		row("hypervisor start → ready line", k.name+" ready")
		row("hypervisor start → SSH command answered", k.name+" ssh")
		row("clean shutdown (power button → exit)", k.name+" stop")
		row("kernel-only limit (QEMU start → init powered off)", k.name+" limit")
	}
	fmt.Printf("resume of the %s boot's saved state (%d resumes, %.0f MiB state):\n", kinds[0].name, boots, float64(saveBytes)/(1<<20))
	row("save (pause → state written → QEMU exited)", "save")
	row("prepare", "resume prepare")
	row("hypervisor start → resumed", "resume ready")
	row("hypervisor start → SSH command answered", "resume ssh")
	ratio := func(a, b string) float64 { return float64(med(times[a])) / float64(med(times[b])) }
	first := kinds[0].name
	fmt.Printf("%s: ready / its kernel-only limit = %.2fx; cold SSH / resume SSH = %.1fx\n", first, ratio(first+" ready", first+" limit"), ratio(first+" ssh", "resume ssh"))
	for _, k := range kinds[1:] {
		fmt.Printf("%s: ready / %s's = %.2fx", k.name, first, ratio(k.name+" ready", first+" ready"))
		if len(times[k.name+" limit"]) > 0 {
			fmt.Printf("; ready / its kernel-only limit = %.2fx", ratio(k.name+" ready", k.name+" limit"))
		}
		fmt.Println()
	}
	return nil
}

// kind is one way of booting the bench's VM.
type kind struct {
	name string
	// q35 and bzImage choose the machine and kernel image (the default:
	// microvm's own choice); initDir another microvm-init.
	q35, bzImage bool
	initDir      string
	// save also saves and resumes this kind's guest.
	save bool
	// machine and cmdline are QEMU's machine and the extra kernel command
	// line of this kind's kernel-only limit ("": measured by another kind).
	machine string
	cmdline []string
}

// runImage boots a distribution image with its own init (systemd) cold
// and resumed from its saved state, boots times.
func runImage(boots int, initDir, store, image string) error {
	l, err := lab.NewLaunch("bootbench", store, initDir, fmt.Sprintf(`vms:
  vm2: { index: 2, vcpu: 2, memory: 1G, image: %s, init: image, store: block, stopTimeout: 60s }
`, image))
	if err != nil {
		return err
	}
	defer l.Close()
	env, cfg, nsPath := l.Env, l.Config, l.NetNS
	times := samples{}
	add := times.add
	for range boots {
		r, err := boot(env, cfg.VM("vm2"), nsPath, "cold", add)
		if err != nil {
			return err
		}
		if _, err := r.Save(); err != nil {
			return err
		}
		if r, err = boot(env, cfg.VM("vm2"), nsPath, "resume", add); err != nil {
			return err
		}
		if r.Prepared.Boot.Resume == nil {
			return fmt.Errorf("not resumed: %s", r.Prepared.Boot)
		}
		if err := r.Stop(time.Minute); err != nil {
			return err
		}
	}
	fmt.Printf("%s with its own init (init: image), PVH, block store (%d boots):\n", image, boots)
	for _, k := range []string{"cold", "resume"} {
		fmt.Printf("  %-52s median %-10s p90 %s\n", k+": hypervisor start → ready (the image's init's report)", med(times[k+" ready"]), p90(times[k+" ready"]))
		fmt.Printf("  %-52s median %-10s p90 %s\n", k+": hypervisor start → SSH command answered", med(times[k+" ssh"]), p90(times[k+" ssh"]))
	}
	fmt.Printf("SSH: cold / resume = %.1fx\n", float64(med(times["cold ssh"]))/float64(med(times["resume ssh"])))
	return nil
}

// boot prepares and starts vm (resuming it when it has a saved state),
// waits for it to be ready and to answer SSH, and records each time under
// kind.
func boot(env launch.Env, vm *config.VM, nsPath, kind string, add func(string, time.Duration)) (*launch.Running, error) {
	t0 := time.Now()
	p, err := launch.Prepare(context.Background(), env, vm, nil)
	if err != nil {
		return nil, err
	}
	add(kind+" prepare", time.Since(t0))
	r, err := launch.Start(context.Background(), p)
	if err != nil {
		return nil, err
	}
	if _, err := r.WaitReady(3*time.Minute, nil); err != nil {
		r.Process.Kill()
		return nil, err
	}
	add(kind+" ready", time.Since(r.Started))
	if err := sshTrue(nsPath, p); err != nil {
		r.Process.Kill()
		return nil, err
	}
	add(kind+" ssh", time.Since(r.Started))
	return r, nil
}

// kernelOnly is how long QEMU takes from its start to its exit booting
// kernel with an initramfs whose init powers off at once: what no guest
// setup can beat with this kernel, machine and accelerator.
func kernelOnly(kernel, initrd, machine string, cmdline ...string) (time.Duration, error) {
	t0 := time.Now()
	out, err := exec.Command(qemu.Binary(vmm.HostArch()), append(qemu.MachineArgs(machine), "-cpu", "max", "-smp", "2", "-m", "1G",
		"-nodefaults", "-no-user-config", "-no-reboot", "-display", "none", "-serial", "null",
		"-kernel", kernel, "-initrd", initrd, "-append", strings.Join(append([]string{"console=ttyS0", "panic=-1"}, cmdline...), " "))...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("kernel-only boot: %v: %s", err, out)
	}
	return time.Since(t0), nil
}

// writePoweroffInitrd writes an initramfs whose /init (busybox) powers the
// machine off at once.
func writePoweroffInitrd(path string) error {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return fmt.Errorf("the kernel-only limit needs a static busybox (apt install busybox-static): %w", err)
	}
	bin, err := os.ReadFile(bb)
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := cpio.Newc.Writer(f)
	recs := []cpio.Record{
		cpio.Directory("dev", 0o755),
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.Directory("bin", 0o755),
		cpio.StaticRecord(bin, cpio.Info{Name: "bin/busybox", Mode: cpio.S_IFREG | 0o755}),
		cpio.StaticFile("init", "#!/bin/busybox sh\n/bin/busybox poweroff -f\n", 0o755),
	}
	if err := cpio.WriteRecords(w, recs); err != nil {
		return err
	}
	if err := cpio.WriteTrailer(w); err != nil {
		return err
	}
	return f.Close()
}

func canKVM() bool {
	if !vmm.HardwareKVM() {
		return false
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// sshTrue runs `true` in the VM over SSH from inside the namespace,
// retrying the connection until it is accepted.
func sshTrue(nsPath string, p *launch.Prepared) error {
	deadline := time.Now().Add(time.Minute)
	for {
		c, err := vmssh.Dial(filepath.Dir(filepath.Dir(filepath.Dir(p.Launch.ConsoleLog))), p.VM.Name, p.VM.Net.Address.String(), nsPath, time.Second)
		if err == nil {
			s, serr := c.NewSession()
			if serr == nil {
				serr = s.Run("true")
				s.Close()
			}
			c.Close()
			return serr
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// samples are durations by what they measure.
type samples map[string][]time.Duration

func (s samples) add(k string, d time.Duration) { s[k] = append(s[k], d) }

func sorted(ds []time.Duration) []time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s
}

func med(ds []time.Duration) time.Duration { return sorted(ds)[len(ds)/2].Round(time.Millisecond) }

func p90(ds []time.Duration) time.Duration {
	s := sorted(ds)
	return s[(len(s)*9)/10-boolInt(len(s)%10 == 0)].Round(time.Millisecond)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
