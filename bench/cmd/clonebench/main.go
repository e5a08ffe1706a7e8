// Command clonebench measures clones of a template through the real
// daemon, side by side in one run: a clone's start to its workload
// answering (one clone, and ten at once) against a cold boot of the same
// VM and against a resume of its saved state (stop --save, start); then
// what ten idle clones cost the host against ten cold-booted VMs of the
// same spec, and the hypervisor's CPU time each start took. Every VM runs the same warm workload (busybox httpd after
// 32 MiB written to its in-memory root); "answering" is `microvm exec VM
// -- wget -qO- http://127.0.0.1:8080/` succeeding (SSH with the VM's own
// host key, and the workload serving).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"microvm.dev/microvm/bench/lab"
	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/hostmem"
)

const workload = `["sh", "-c", "dd if=/dev/urandom of=/root/warm bs=1M count=32 2>/dev/null; mkdir -p /www; echo warm > /www/index.html; exec httpd -f -p 8080 -h /www"]`

func main() {
	bin := flag.String("bin", "bin", "directory holding microvm and microvm-init")
	store := flag.String("store", "", "store directory holding base/")
	rounds := flag.Int("rounds", 5, "rounds of every start, alternated")
	memory := flag.String("memory", "1G", "each VM's memory")
	count := flag.Int("count", 10, "VMs started at once, and measured idle")
	settle := flag.Duration("settle", 30*time.Second, "how long the VMs idle before they are measured")
	flag.Parse()
	if err := run(*bin, *store, *memory, *rounds, *count, *settle); err != nil {
		fmt.Fprintln(os.Stderr, "clonebench:", err)
		os.Exit(1)
	}
}

// fleet is the template, the VM cold-booted and the VM saved and resumed
// (all of the template's spec), and n more of it for the memory figures.
func fleet(memory string, n int) string {
	vm := fmt.Sprintf("store: block, memory: %s, healthCheck: { http: 8080 }, command: %s", memory, workload)
	var b strings.Builder
	fmt.Fprintf(&b, "vms:\n  tpl: { index: 1, template: true, %s }\n  cold: { index: 2, autostart: false, %s }\n  saved: { index: 3, autostart: false, %s }\n", vm, vm, vm)
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "  cold-%d: { index: %d, autostart: false, %s }\n", i, 3+i, vm)
	}
	return b.String()
}

func run(bin, store, memory string, rounds, n int, settle time.Duration) error {
	l, err := lab.New("clb", bin, store)
	if err != nil {
		return err
	}
	defer l.Close()
	file := filepath.Join(l.State, "infra.yaml")
	if err := os.WriteFile(file, []byte(fleet(memory, n)), 0o644); err != nil {
		return err
	}
	if err := l.StartDaemon("--config", file); err != nil {
		return err
	}
	b := bench{l: l}
	// The template's state is made by the first clone; the saved VM is
	// booted and saved once.
	t0 := time.Now()
	if err := b.clone("first"); err != nil {
		return err
	}
	fmt.Printf("template made and first clone answering: %.1fs\n", time.Since(t0).Seconds())
	b.rm("first")
	if err := b.start("saved"); err != nil {
		return err
	}
	if out, err := l.CLI("stop", "--save", "saved"); err != nil {
		return fmt.Errorf("stop --save saved: %v: %s", err, out)
	}
	var one, ten, tenAll, cold, resume, save, cpuClone, cpuCold, cpuResume []float64
	for r := range rounds {
		t := time.Now()
		if err := b.clone("k1"); err != nil {
			return err
		}
		one = append(one, time.Since(t).Seconds())
		cpuClone = append(cpuClone, b.cpu("k1"))
		if r == 0 {
			b.explain("k1")
		}
		b.rm("k1")

		names := names("k", n)
		t = time.Now()
		each, err := b.cloneMany(names)
		if err != nil {
			return err
		}
		tenAll = append(tenAll, time.Since(t).Seconds())
		ten = append(ten, lab.Median(each))
		b.rm(names...)

		t = time.Now()
		if err := b.start("cold"); err != nil {
			return err
		}
		cold = append(cold, time.Since(t).Seconds())
		cpuCold = append(cpuCold, b.cpu("cold"))
		l.CLI("stop", "cold")

		t = time.Now()
		if err := b.start("saved"); err != nil {
			return err
		}
		resume = append(resume, time.Since(t).Seconds())
		cpuResume = append(cpuResume, b.cpu("saved"))
		t = time.Now()
		if out, err := l.CLI("stop", "--save", "saved"); err != nil {
			return fmt.Errorf("stop --save saved: %v: %s", err, out)
		}
		save = append(save, time.Since(t).Seconds())
		fmt.Printf("round %d: clone %.2fs, %d clones %.2fs each (all %.2fs), cold %.2fs, resume %.2fs\n", r+1, one[r], n, ten[r], tenAll[r], cold[r], resume[r])
	}
	m := lab.Median
	fmt.Printf("\nmedian of %d, start → workload answering over SSH:\n", rounds)
	fmt.Printf("| clone, one | %d clones at once: each (all) | cold boot | resume (stop --save, start) |\n|---|---|---|---|\n", n)
	fmt.Printf("| %.2f s | %.2f s (%.2f s) | %.2f s | %.2f s |\n", m(one), m(ten), m(tenAll), m(cold), m(resume))
	fmt.Printf("cold / clone: %.1fx; resume / clone: %.1fx; save: %.2f s\n", m(cold)/m(one), m(resume)/m(one), m(save))
	fmt.Printf("the hypervisor's CPU time until the workload answered: clone %.2f s, cold boot %.2f s, resume %.2f s\n\n", m(cpuClone), m(cpuCold), m(cpuResume))
	return b.memory(n, settle)
}

// memory measures n idle clones, then n idle cold-booted VMs, one set at a
// time: each VM's cost as the daemon measures it (proportional set sizes,
// so the template's pages the clones share are split between them) and
// the host's memory in use risen.
func (b bench) memory(n int, settle time.Duration) error {
	clones := names("m", n)
	before := memUsed()
	if _, err := b.cloneMany(clones); err != nil {
		return err
	}
	time.Sleep(settle)
	cl, err := b.costs(clones)
	if err != nil {
		return err
	}
	clRise := memUsed() - before
	b.rm(clones...)
	time.Sleep(10 * time.Second)
	cold := make([]string, n)
	for i := range cold {
		cold[i] = fmt.Sprintf("cold-%d", i+1)
	}
	before = memUsed()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, vm := range cold {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = b.start(vm) }()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	time.Sleep(settle)
	co, err := b.costs(cold)
	if err != nil {
		return err
	}
	coRise := memUsed() - before
	for _, vm := range cold {
		b.l.CLI("stop", vm)
	}
	fmt.Printf("%d idle VMs after %s, MiB: | per VM, median (guest + overhead) | all, summed | the host's memory in use risen |\n|---|---|---|---|\n", n, settle)
	fmt.Printf("| clones | %s | %d | %d |\n", cl.row(), cl.sum>>20, clRise>>20)
	fmt.Printf("| cold-booted | %s | %d | %d |\n", co.row(), co.sum>>20, coRise>>20)
	fmt.Printf("cold / clones: %.1fx summed, %.1fx by the host's memory in use\n", float64(co.sum)/float64(cl.sum), float64(coRise)/float64(clRise))
	return nil
}

type bench struct{ l *lab.Lab }

// clone clones tpl as name and waits until its workload answers.
func (b bench) clone(name string) error {
	if out, err := b.l.CLI("clone", "tpl", name); err != nil {
		return fmt.Errorf("clone %s: %v: %s", name, err, out)
	}
	return b.answers(name)
}

// cloneMany clones tpl as every name at once and says when each answered.
func (b bench) cloneMany(names []string) ([]float64, error) {
	t := time.Now()
	if out, err := b.l.CLI(append([]string{"clone", "tpl"}, names...)...); err != nil {
		return nil, fmt.Errorf("clone %v: %v: %s", names, err, out)
	}
	each := make([]float64, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, vm := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = b.answers(vm)
			each[i] = time.Since(t).Seconds()
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return each, nil
}

// start starts vm and waits until its workload answers.
func (b bench) start(vm string) error {
	if out, err := b.l.CLI("start", vm); err != nil {
		return fmt.Errorf("start %s: %v: %s", vm, err, out)
	}
	return b.answers(vm)
}

// answers waits until vm's workload answers over SSH.
func (b bench) answers(vm string) error {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		out, err := b.l.CLI("exec", vm, "--", "wget", "-qO-", "http://127.0.0.1:8080/")
		if err == nil && strings.TrimSpace(string(out)) == "warm" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not answer: %v: %s", vm, err, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// explain prints how vm's start went: its launch's steps and the time
// from the hypervisor's start to ready.
func (b bench) explain(vm string) {
	out, err := b.l.CLI("status", vm, "-o", "json")
	var st apitypes.VMStatus
	if err != nil || json.Unmarshal(out, &st) != nil {
		return
	}
	var steps []string
	for _, s := range st.Steps {
		steps = append(steps, fmt.Sprintf("%s %.0fms", s.Name, s.Seconds*1000))
	}
	fmt.Printf("%s: prepare %.2fs, hypervisor start → ready %.2fs; %s\n", vm, st.PrepareSeconds, st.BootSeconds, strings.Join(steps, ", "))
}

func (b bench) rm(names ...string) {
	for _, vm := range names {
		b.l.CLI("rm", vm)
	}
}

// costs are the VMs' host memory as the daemon last measured it.
type costs struct {
	guest, overhead []float64
	sum             int64
}

func (c costs) row() string {
	m := lab.Median
	return fmt.Sprintf("%.0f (%.0f + %.0f)", m(c.guest)+m(c.overhead), m(c.guest), m(c.overhead))
}

func (b bench) costs(vms []string) (costs, error) {
	out, err := b.l.CLI("list", "-o", "json")
	if err != nil {
		return costs{}, fmt.Errorf("list: %v: %s", err, out)
	}
	var all []apitypes.VMStatus
	if err := json.Unmarshal(out, &all); err != nil {
		return costs{}, fmt.Errorf("list: %w", err)
	}
	by := map[string]apitypes.VMStatus{}
	for _, v := range all {
		by[v.Name] = v
	}
	var c costs
	for _, vm := range vms {
		hm := by[vm].HostMemory
		if hm == nil {
			return c, fmt.Errorf("%s has no memory measure yet", vm)
		}
		c.guest = append(c.guest, float64(hm.Guest)/(1<<20))
		c.overhead = append(c.overhead, float64(hm.Hypervisor+hm.Helpers)/(1<<20))
		c.sum += hm.Total
	}
	return c, nil
}

func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + strconv.Itoa(i+1)
	}
	return out
}

// cpu is the CPU time vm's hypervisor has used (hostmem.Proc.CPUSeconds
// over the process the daemon started and its descendants: it runs QEMU
// confined in a PID namespace of its own).
func (b bench) cpu(vm string) float64 {
	out, err := b.l.CLI("status", vm, "-o", "json")
	var st apitypes.VMStatus
	if err != nil || json.Unmarshal(out, &st) != nil || st.PID == 0 {
		return 0
	}
	parent := map[int]int{}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(path)))
		// state, then ppid, after the command's closing parenthesis
		if f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:])); len(f) > 1 {
			parent[pid], _ = strconv.Atoi(f[1])
		}
	}
	var tree []int
	for pid := range parent {
		for q := pid; q > 1; q = parent[q] {
			if q == st.PID {
				tree = append(tree, pid)
				break
			}
		}
	}
	secs, _ := hostmem.Proc("/proc").CPUSeconds(tree...)
	return secs
}

// memUsed is the host's memory in use, page cache included (MemTotal -
// MemFree), in bytes: MemAvailable would count the template's pages the
// clones map, file pages in the page cache, as available.
func memUsed() int64 {
	b, _ := os.ReadFile("/proc/meminfo")
	kb := map[string]int64{}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 {
			kb[f[0]], _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	return (kb["MemTotal:"] - kb["MemFree:"]) << 10
}
