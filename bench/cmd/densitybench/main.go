// Command densitybench measures what idle VMs cost the host in memory and
// how many fit (run as root, after building bin/microvm-init and a base
// image): N VMs of the reference size (1 GiB, 1 vCPU) booted at once for
// each N of -counts, left idle for -settle, then each measured from /proc
// (internal/hostmem: the guest's memory resident on the host, the
// hypervisor's own and virtiofsd's, proportional set sizes), the median
// per VM printed with its split, and the host's available memory before
// and after. Each variant runs in the same run, side by side:
//
//   - microvm: as microvm launches a VM by default here (the store over
//     virtiofs, free page reporting on);
//   - no reporting: the same without free page reporting;
//   - tb-size N: the same with QEMU's TCG translation cache at N MiB
//     (-tb-sizes);
//   - KSM: the store as a block disk (private guest memory, which the
//     kernel can merge) with the host's KSM on for the run (its settings
//     put back after);
//   - bare QEMU: qemu-system-x86_64 with the same devices started by hand
//     (the store over QEMU's own 9p: no helper process), what a VM costs
//     without microvm.
//
// With -image, the same for VMs of that image (an imported Debian nginx
// root, say) running its entrypoint.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"microvm.dev/microvm/bench/lab"
	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/hostmem"
	"microvm.dev/microvm/internal/ksm"
	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/vmm"
)

func main() {
	counts := flag.String("counts", "1,5,20", "how many VMs at once")
	initDir := flag.String("init-dir", "bin", "directory holding microvm-init")
	store := flag.String("store", "", "a store directory holding the base image (store/base)")
	image := flag.String("image", "", "also measure VMs of this image (a name of -store's state directory), its entrypoint their workload")
	settle := flag.Duration("settle", time.Minute, "how long the booted VMs idle before they are measured")
	variants := flag.String("variants", "microvm,no-reporting,ksm,bare", "which variants to run (microvm, no-reporting, ksm, bare, tb-size)")
	tbSizes := flag.String("tb-sizes", "64,256", "TCG translation cache sizes (MiB) of the tb-size variant")
	flag.Parse()
	if err := run(*counts, *initDir, *store, *image, *settle, *variants, *tbSizes); err != nil {
		fmt.Fprintln(os.Stderr, "densitybench:", err)
		os.Exit(1)
	}
}

// variant is one way of running the VMs.
type variant struct {
	name string
	// store is the VMs' store key; bare starts QEMU by hand; ksm turns the
	// host's KSM on for the run.
	store     string
	bare, ksm bool
	noFPR     bool
	tbSizeMiB int
}

// result is one variant's VMs measured.
type result struct {
	variant, image string
	n              int
	usage          []hostmem.Usage
	availDrop      int64 // the host's available memory before less after
	ready          time.Duration
}

func run(countsFlag, initDir, store, image string, settle time.Duration, variantsFlag, tbFlag string) error {
	var counts []int
	for _, s := range strings.Split(countsFlag, ",") {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return fmt.Errorf("-counts: %q", s)
		}
		counts = append(counts, n)
	}
	var vs []variant
	for _, name := range strings.Split(variantsFlag, ",") {
		switch name {
		case "microvm":
			vs = append(vs, variant{name: "microvm (virtiofs, reporting)", store: "auto"})
		case "no-reporting":
			vs = append(vs, variant{name: "microvm, no free page reporting", store: "auto", noFPR: true})
		case "ksm":
			vs = append(vs, variant{name: "microvm, block store, KSM on", store: "block", ksm: true})
		case "bare":
			vs = append(vs, variant{name: "bare QEMU (same devices, 9p)", store: "9p", bare: true})
		case "tb-size":
			for _, s := range strings.Split(tbFlag, ",") {
				mib, err := strconv.Atoi(s)
				if err != nil {
					return fmt.Errorf("-tb-sizes: %q", s)
				}
				vs = append(vs, variant{name: fmt.Sprintf("microvm, tb-size %d MiB", mib), store: "auto", tbSizeMiB: mib})
			}
		default:
			return fmt.Errorf("-variants: unknown %q", name)
		}
	}
	images := []string{"base"}
	if image != "" {
		images = append(images, image)
	}
	max := slices.Max(counts)
	proc := hostmem.Proc("/proc")
	fmt.Printf("%d CPUs, %s available at the start; each VM 1 GiB, 1 vCPU, idle %s before it is measured\n", runtime.NumCPU(), mib(must(proc.Available())), settle)
	var results []result
	for _, img := range images {
		for _, n := range counts {
			for _, v := range vs {
				r, err := measure(v, img, n, max, initDir, store, settle)
				if err != nil {
					return fmt.Errorf("%s, %s, %d VMs: %w", v.name, img, n, err)
				}
				results = append(results, r)
				report(r)
			}
		}
	}
	summarize(results)
	return nil
}

// fleetFile is n VMs of the image on the store kind.
func fleetFile(n int, image, store string) string {
	var b strings.Builder
	b.WriteString("host: { externalInterface: auto }\nvms:\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "  d%d: { index: %d, memory: 1G, vcpu: 1, image: %q, store: %s }\n", i, i, image, store)
	}
	return b.String()
}

// measure boots n VMs of v and img, lets them idle, measures each.
func measure(v variant, img string, n, max int, initDir, store string, settle time.Duration) (result, error) {
	res := result{variant: v.name, image: img, n: n}
	l, err := lab.NewLaunch("densitybench", store, initDir, fleetFile(n, img, v.store))
	if err != nil {
		return res, err
	}
	defer l.Close()
	l.Env.NoFreePageReporting, l.Env.TBSizeMiB = v.noFPR, v.tbSizeMiB
	if v.ksm {
		restore, err := ksmOn()
		if err != nil {
			return res, err
		}
		defer restore()
	}
	proc := hostmem.Proc("/proc")
	before, err := proc.Available()
	if err != nil {
		return res, err
	}
	vms := make([]*vm, n)
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, 2) // TCG boots on 2 cores: more at once only slow each other
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			spec := l.Config.VM(fmt.Sprintf("d%d", i+1))
			var r *vm
			var err error
			if v.bare {
				r, err = startBare(l.Env, spec)
			} else {
				r, err = start(l.Env, spec)
			}
			mu.Lock()
			defer mu.Unlock()
			vms[i] = r
			if err != nil && firstErr == nil {
				firstErr = err
			}
		})
	}
	wg.Wait()
	res.ready = time.Since(t0)
	defer func() {
		for _, r := range vms {
			if r != nil {
				r.stop()
			}
		}
	}()
	if firstErr != nil {
		return res, firstErr
	}
	time.Sleep(settle)
	if v.ksm {
		waitKSM(settle)
	}
	for _, r := range vms {
		u, err := r.measure(proc)
		if err != nil {
			return res, err
		}
		res.usage = append(res.usage, u)
	}
	after, err := proc.Available()
	if err != nil {
		return res, err
	}
	res.availDrop = before - after
	return res, nil
}

// vm is one booted VM: microvm's launch, or bare QEMU.
type vm struct {
	pid     int
	memory  int64
	helpers string // virtiofsd's socket ("" without)
	stop    func()
}

func (v *vm) measure(proc hostmem.Proc) (hostmem.Usage, error) {
	var helpers []int
	if v.helpers != "" {
		h, err := proc.Helpers("virtiofsd", v.helpers)
		if err != nil {
			return hostmem.Usage{}, err
		}
		helpers = h
	}
	return proc.Memory(v.pid, helpers, v.memory)
}

// start boots spec as microvm does, until its ready line.
func start(env launch.Env, spec *config.VM) (*vm, error) {
	p, err := launch.Prepare(context.Background(), env, spec, nil)
	if err != nil {
		return nil, err
	}
	r, err := launch.Start(context.Background(), p)
	if err != nil {
		return nil, err
	}
	if _, err := r.WaitReady(5*time.Minute, nil); err != nil {
		r.Process.Kill()
		return nil, err
	}
	out := &vm{pid: r.Process.Pid, memory: int64(spec.Memory), stop: func() { r.Stop(30 * time.Second) }}
	for _, s := range p.Launch.Shares {
		if s.VirtiofsSocket != "" {
			out.helpers = s.VirtiofsSocket
		}
	}
	return out, nil
}

// startBare boots spec with qemu-system-x86_64 started by hand: the
// command line microvm would give it, without microvm's process around
// it (prepared by launch for its initramfs, volumes and TAP).
func startBare(env launch.Env, spec *config.VM) (*vm, error) {
	p, err := launch.Prepare(context.Background(), env, spec, nil)
	if err != nil {
		return nil, err
	}
	argv := p.Resolved.Command.Argv
	if i := slices.Index(argv, "--"); i >= 0 && argv[0] == "nsenter" {
		argv = argv[i+1:]
	}
	os.MkdirAll(filepath.Dir(p.Launch.ControlSocket), 0o755)
	os.MkdirAll(filepath.Dir(p.Launch.ConsoleLog), 0o755)
	cmd := exec.Command("nsenter", append([]string{"--net=" + env.NetNS, "--"}, argv...)...)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	if _, err := vmm.WaitConsole(p.Launch.ConsoleLog, 0, guest.ReadyPrefix, guest.FailedPrefix, 5*time.Minute, exited, nil); err != nil {
		cmd.Process.Kill()
		return nil, fmt.Errorf("bare QEMU: %w", err)
	}
	return &vm{pid: cmd.Process.Pid, memory: int64(spec.Memory), stop: func() { cmd.Process.Kill(); <-exited }}, nil
}

// ksmOn turns the host's KSM on, scanning fast for the run; the returned
// function puts its settings back.
func ksmOn() (func(), error) {
	d := ksm.Dir("/sys/kernel/mm/ksm")
	old := map[string]string{}
	for _, f := range []string{"run", "pages_to_scan", "sleep_millisecs"} {
		b, err := os.ReadFile(filepath.Join(string(d), f))
		if err != nil {
			return nil, err
		}
		old[f] = strings.TrimSpace(string(b))
	}
	if _, err := d.Apply(config.KSM{Enabled: true, PagesToScan: 5000, Sleep: config.Duration(10 * time.Millisecond)}); err != nil {
		return nil, err
	}
	return func() {
		for _, f := range []string{"run", "pages_to_scan", "sleep_millisecs"} {
			os.WriteFile(filepath.Join(string(d), f), []byte(old[f]), 0o644)
		}
	}, nil
}

// waitKSM waits (up to limit more) until KSM has scanned everything twice.
func waitKSM(limit time.Duration) {
	read := func() int {
		b, _ := os.ReadFile("/sys/kernel/mm/ksm/full_scans")
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return n
	}
	start := read()
	for deadline := time.Now().Add(limit); time.Now().Before(deadline) && read() < start+2; {
		time.Sleep(time.Second)
	}
}

// report prints one variant's figures.
func report(r result) {
	var total, guest, over []float64
	for _, u := range r.usage {
		total = append(total, float64(u.Total()))
		guest = append(guest, float64(u.Guest))
		over = append(over, float64(u.Overhead()))
	}
	fmt.Printf("%-34s %-6s N=%-3d per VM: %s (guest %s, overhead %s); host available fell %s (%s per VM); ready in %s\n",
		r.variant, r.image, r.n, mib(int64(lab.Median(total))), mib(int64(lab.Median(guest))), mib(int64(lab.Median(over))),
		mib(r.availDrop), mib(r.availDrop/int64(r.n)), r.ready.Round(time.Second))
}

// summarize says how many idle 1 GiB VMs this host holds with the
// defaults: its available memory now over the largest run's per-VM drop,
// and over the worst case of guests that use all their memory.
func summarize(results []result) {
	var best result
	for _, r := range results {
		if strings.HasPrefix(r.variant, "microvm (") && r.image == "base" && r.n > best.n {
			best = r
		}
	}
	if best.n == 0 {
		return
	}
	avail, err := hostmem.Proc("/proc").Available()
	if err != nil {
		return
	}
	var over []float64
	for _, u := range best.usage {
		over = append(over, float64(u.Overhead()))
	}
	perIdle := best.availDrop / int64(best.n)
	perFull := 1<<30 + int64(lab.Median(over))
	fmt.Printf("this host (%s available now) holds about %d idle 1 GiB VMs with the defaults (%s each, from the %d-VM run), or %d whose guests use all their memory (%s each)\n",
		mib(avail), avail/perIdle, mib(perIdle), best.n, avail/perFull, mib(perFull))
}

func mib(b int64) string { return fmt.Sprintf("%d MiB", b>>20) }

func must[T any](v T, err error) T {
	if err != nil {
		fmt.Fprintln(os.Stderr, "densitybench:", err)
		os.Exit(1)
	}
	return v
}
