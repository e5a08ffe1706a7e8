// Command bootbench measures how fast a microvm guest boots (run as root,
// after building bin/microvm-init and a base image): the initramfs base
// archive built cold and reused from the cache, and over -boots boots of one
// VM the time from starting the hypervisor to the guest's ready line and to
// the first SSH command answered. It prints medians and p90s.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"time"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/hostnet"
	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/network"
	"microvm.dev/microvm/internal/vmm"
	"microvm.dev/microvm/internal/vmssh"
)

const vmConfig = `
host: { externalInterface: auto }
vms:
  vm1:
    index: 1
    vcpu: 2
    memory: 1G
    volumes: [{ name: data, mountPoint: /mnt/storage, size: 1G }]
`

func main() {
	boots := flag.Int("boots", 10, "number of boots")
	builds := flag.Int("builds", 5, "initramfs builds of each kind")
	initDir := flag.String("init-dir", "bin", "directory holding microvm-init")
	store := flag.String("store", "", "a store directory holding the base image (store/base)")
	flag.Parse()
	if err := run(*boots, *builds, *initDir, *store); err != nil {
		fmt.Fprintln(os.Stderr, "bootbench:", err)
		os.Exit(1)
	}
}

func run(boots, builds int, initDir, store string) error {
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
	// Alternating, in one run: the PVH vmlinux (what microvm boots) and the
	// same kernel's bzImage.
	kinds := []string{"pvh", "bzImage"}
	prep, ready, sshUp, stop := map[string][]time.Duration{}, map[string][]time.Duration{}, map[string][]time.Duration{}, map[string][]time.Duration{}
	for i := range 2 * boots {
		kind := kinds[i%2]
		env.BzImage = kind == "bzImage"
		t0 := time.Now()
		p, err := launch.Prepare(context.Background(), env, cfg.VM("vm1"), nil)
		if err != nil {
			return err
		}
		prep[kind] = append(prep[kind], time.Since(t0))
		r, err := launch.Start(context.Background(), p)
		if err != nil {
			return err
		}
		if _, err := r.WaitReady(3*time.Minute, nil); err != nil {
			r.Process.Kill()
			return err
		}
		ready[kind] = append(ready[kind], time.Since(r.Started))
		if err := sshTrue(nsPath, p); err != nil {
			r.Process.Kill()
			return err
		}
		sshUp[kind] = append(sshUp[kind], time.Since(r.Started))
		t1 := time.Now()
		if err := r.Stop(30 * time.Second); err != nil {
			return err
		}
		stop[kind] = append(stop[kind], time.Since(t1))
	}
	for _, kind := range kinds {
		fmt.Printf("kernel as %s (%d boots):\n", kind, boots)
		fmt.Printf("  %-40s median %-10s p90 %s\n", "prepare (initramfs, keys, volume)", med(prep[kind]), p90(prep[kind]))
		fmt.Printf("  %-40s median %-10s p90 %s\n", "hypervisor start → ready line", med(ready[kind]), p90(ready[kind]))
		fmt.Printf("  %-40s median %-10s p90 %s\n", "hypervisor start → SSH command answered", med(sshUp[kind]), p90(sshUp[kind]))
		fmt.Printf("  %-40s median %-10s p90 %s\n", "clean shutdown (power button → exit)", med(stop[kind]), p90(stop[kind]))
	}
	fmt.Printf("ready: bzImage / pvh = %.2fx\n", float64(med(ready["bzImage"]))/float64(med(ready["pvh"])))
	return nil
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
