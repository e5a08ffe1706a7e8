// Command bootbench measures how fast a microvm guest boots (run as root,
// after building bin/microvm-init and a base image): the initramfs base
// archive built cold and reused from the cache; over -boots rounds, side by
// side, a VM booted cold with its kernel as the PVH vmlinux and as the
// bzImage (hypervisor start to the guest's ready line and to the first SSH
// command answered), the same VM saved and resumed (hypervisor start to
// resumed and to SSH), and the kernel-only limit: the same QEMU and kernel
// with an initramfs whose init powers off at once. It prints medians, p90s
// and the ratios; with -compare-init, PVH boots with another microvm-init
// build alternate with them (a change to the guest's boot, side by side).
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

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/hostnet"
	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/network"
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
	systemdImage := flag.String("systemd-image", "", "an image in the store whose /sbin/init is systemd: booted with init: image, cold and resumed")
	imageBoots := flag.Int("image-boots", 3, "boots of -systemd-image")
	flag.Parse()
	if err := run(*boots, *builds, *initDir, *store, *compareInit); err != nil {
		fmt.Fprintln(os.Stderr, "bootbench:", err)
		os.Exit(1)
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
	st, err := os.MkdirTemp("", "bootbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(st)
	if store == "" {
		return fmt.Errorf("-store is required (build one with scripts/build-base-image.sh DIR/base)")
	}
	abs, _ := filepath.Abs(store)
	if err := os.Symlink(abs, filepath.Join(st, "store")); err != nil {
		return err
	}
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

	nsName := fmt.Sprintf("bootbench%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", nsName).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", nsName).Run()
	nsPath := "/run/netns/" + nsName
	cfg, err := config.Parse("bench.yaml", []byte(vmConfig), config.Options{})
	if err != nil {
		return err
	}
	m, err := network.New(nsPath, hostnet.Options{})
	if err != nil {
		return err
	}
	defer m.Close()
	if _, err := m.Apply(cfg); err != nil {
		return err
	}
	env := launch.Env{StateDir: st, RunDir: filepath.Join(st, "run"), KernelCache: guest.DefaultKernelCache, InitDir: initDir, NetNS: nsPath}
	limitInitrd := filepath.Join(st, "poweroff.cpio")
	if err := writePoweroffInitrd(limitInitrd); err != nil {
		return err
	}
	// Round by round, in one run: the PVH vmlinux (what microvm boots) and
	// the same kernel's bzImage cold, a resume of the PVH boot's saved
	// state, and the kernel-only limit of each.
	kinds := []string{"pvh", "bzImage"}
	if compareInit != "" {
		kinds = append(kinds, "pvh, -compare-init")
	}
	times := map[string][]time.Duration{}
	add := func(k string, d time.Duration) { times[k] = append(times[k], d) }
	var saveBytes int64
	tscKHz := hostTSCKHz()
	for range boots {
		for _, kind := range kinds {
			env.BzImage, env.InitDir = kind == "bzImage", initDir
			if kind == "pvh, -compare-init" {
				env.InitDir = compareInit
			}
			r, err := boot(env, cfg.VM("vm1"), nsPath, kind, add)
			if err != nil {
				return err
			}
			if kind == "pvh" {
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
			add(kind+" stop", time.Since(t1))
			if env.InitDir != initDir {
				continue // the same kernel's limit
			}
			p, err := launch.Command(env, cfg.VM("vm1"))
			if err != nil {
				return err
			}
			d, err := kernelOnly(p.Launch.Kernel, limitInitrd, "q35,accel=tcg")
			if err != nil {
				return err
			}
			add("limit "+kind, d)
			if kind == "pvh" && tscKHz > 0 {
				// The microvm machine under TCG boots only with the TSC's
				// frequency given (no PIT calibration, no HPET to refine it).
				d, err := kernelOnly(p.Launch.Kernel, limitInitrd, "microvm,accel=tcg,pit=on,pic=on,rtc=on,isa-serial=on,x-option-roms=off",
					fmt.Sprintf("tsc_early_khz=%d", tscKHz), "tsc=reliable")
				if err != nil {
					return err
				}
				add("limit pvh microvm", d)
			}
		}
	}
	row := func(what, k string) {
		fmt.Printf("  %-52s median %-10s p90 %s\n", what, med(times[k]), p90(times[k]))
	}
	for _, kind := range kinds {
		fmt.Printf("cold boot, kernel as %s (%d boots):\n", kind, boots)
		row("prepare (initramfs, keys, volume)", kind+" prepare")
		row("hypervisor start → ready line", kind+" ready")
		row("hypervisor start → SSH command answered", kind+" ssh")
		row("clean shutdown (power button → exit)", kind+" stop")
		if len(times["limit "+kind]) > 0 {
			row("kernel-only limit (QEMU start → init powered off)", "limit "+kind)
		}
		if kind == "pvh" && len(times["limit pvh microvm"]) > 0 {
			row(fmt.Sprintf("kernel-only limit, -M microvm (tsc_early_khz=%d)", tscKHz), "limit pvh microvm")
		}
	}
	fmt.Printf("resume of the PVH boot's saved state (%d resumes, %.0f MiB state):\n", boots, float64(saveBytes)/(1<<20))
	row("save (pause → state written → QEMU exited)", "save")
	row("prepare", "resume prepare")
	row("hypervisor start → resumed", "resume ready")
	row("hypervisor start → SSH command answered", "resume ssh")
	ratio := func(a, b string) float64 { return float64(med(times[a])) / float64(med(times[b])) }
	fmt.Printf("ready: bzImage / pvh = %.2fx; pvh ready / its kernel-only limit = %.2fx; bzImage ready / its limit = %.2fx; cold SSH / resume SSH = %.1fx\n",
		ratio("bzImage ready", "pvh ready"), ratio("pvh ready", "limit pvh"), ratio("bzImage ready", "limit bzImage"), ratio("pvh ssh", "resume ssh"))
	if compareInit != "" {
		fmt.Printf("ready: -compare-init's / this microvm-init's = %.2fx\n", ratio("pvh, -compare-init ready", "pvh ready"))
	}
	return nil
}

// runImage boots a distribution image with its own init (systemd) cold
// and resumed from its saved state, boots times.
func runImage(boots int, initDir, store, image string) error {
	st, err := os.MkdirTemp("", "bootbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(st)
	abs, _ := filepath.Abs(store)
	if err := os.Symlink(abs, filepath.Join(st, "store")); err != nil {
		return err
	}
	nsName := fmt.Sprintf("bootbench%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", nsName).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", nsName).Run()
	nsPath := "/run/netns/" + nsName
	cfg, err := config.Parse("bench.yaml", []byte(fmt.Sprintf(`vms:
  vm2: { index: 2, vcpu: 2, memory: 1G, image: %s, init: image, store: block, stopTimeout: 60s }
`, image)), config.Options{})
	if err != nil {
		return err
	}
	m, err := network.New(nsPath, hostnet.Options{})
	if err != nil {
		return err
	}
	defer m.Close()
	if _, err := m.Apply(cfg); err != nil {
		return err
	}
	env := launch.Env{StateDir: st, RunDir: filepath.Join(st, "run"), KernelCache: guest.DefaultKernelCache, InitDir: initDir, NetNS: nsPath}
	times := map[string][]time.Duration{}
	add := func(k string, d time.Duration) { times[k] = append(times[k], d) }
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
	out, err := exec.Command(qemu.Binary(vmm.HostArch()), "-machine", machine, "-cpu", "max", "-smp", "2", "-m", "1G",
		"-nodefaults", "-no-user-config", "-no-reboot", "-display", "none", "-serial", "null",
		"-kernel", kernel, "-initrd", initrd, "-append", strings.Join(append([]string{"console=ttyS0", "panic=-1"}, cmdline...), " ")).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("kernel-only boot: %v: %s", err, out)
	}
	return time.Since(t0), nil
}

// hostTSCKHz is the host's TSC frequency, which a TCG guest's TSC runs at,
// read from /proc/cpuinfo where the CPU says its TSC is invariant and its
// frequency known (0 otherwise).
func hostTSCKHz() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil || !strings.Contains(string(b), " constant_tsc") || !strings.Contains(string(b), " tsc_known_freq") {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "cpu MHz"); ok {
			var mhz float64
			if _, err := fmt.Sscanf(strings.TrimLeft(v, " \t:"), "%f", &mhz); err == nil {
				return int(mhz * 1000)
			}
		}
	}
	return 0
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
