// Command daemonbench measures the daemon (run as root, with bin/microvm,
// bin/microvm-init and a store holding the base image): its resident memory
// with 0, 10 and 50 tiny VMs running, and the latency of applying a file in
// which one VM of 50 changed, with that VM's boot taken out; also a no-op
// apply of the 50-VM file. It runs the real binaries in a throwaway
// network namespace.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"microvm.dev/microvm/bench/lab"
)

func main() {
	bin := flag.String("bin", "bin", "directory holding microvm and microvm-init")
	store := flag.String("store", "", "store directory holding base/")
	sizes := flag.String("sizes", "0,10,50", "fleet sizes")
	flag.Parse()
	if err := run(*bin, *store, *sizes); err != nil {
		fmt.Fprintln(os.Stderr, "daemonbench:", err)
		os.Exit(1)
	}
}

func fleet(n int, changed int) string {
	var b strings.Builder
	b.WriteString("defaults: { vcpu: 1, memory: 128M, stopTimeout: 5s }\nvms:")
	if n == 0 {
		b.WriteString(" {}\n")
	}
	b.WriteString("\n")
	for i := 1; i <= n; i++ {
		mem := ""
		if i == changed {
			mem = ", memory: 160M"
		}
		fmt.Fprintf(&b, "  t%d: { subnet: 10.%d.%d.0/24%s }\n", i, 100+i/250, i%250, mem)
	}
	return b.String()
}

func rssKB(pid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			var kb int
			fmt.Sscan(f[1], &kb)
			return kb
		}
	}
	return 0
}

type applyResult struct {
	VMs []struct {
		Name           string  `json:"name"`
		Action         string  `json:"action"`
		StopSeconds    float64 `json:"stopSeconds"`
		PrepareSeconds float64 `json:"prepareSeconds"`
		BootSeconds    float64 `json:"bootSeconds"`
	} `json:"vms"`
	Seconds float64 `json:"seconds"`
	Phases  struct {
		Parse, Stop, Network, Start float64
	} `json:"phases"`
}

func secs(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

// apply applies src with the CLI and times it.
func apply(l *lab.Lab, src string) (applyResult, time.Duration, error) {
	f := filepath.Join(l.State, "infra.yaml")
	os.WriteFile(f, []byte(src), 0o644)
	t0 := time.Now()
	out, err := l.CLI("apply", "-f", f, "-o", "json")
	d := time.Since(t0)
	var res applyResult
	json.Unmarshal(out, &res)
	if err != nil {
		return res, d, fmt.Errorf("apply: %v: %.2000s", err, out)
	}
	return res, d, nil
}

func run(bin, store, sizes string) error {
	l, err := lab.New("dbench", bin, store)
	if err != nil {
		return err
	}
	defer l.Close()
	if err := l.StartDaemon(); err != nil {
		return err
	}
	pid := l.PID()
	fmt.Printf("%-46s %s\n", "measurement", "value")
	for _, s := range strings.Split(sizes, ",") {
		var n int
		fmt.Sscan(s, &n)
		t0 := time.Now()
		if _, _, err := apply(l, fleet(n, 0)); err != nil {
			return err
		}
		up := time.Since(t0)
		time.Sleep(2 * time.Second)
		fmt.Printf("%-46s %.1f MB (fleet up in %s)\n", fmt.Sprintf("daemon RSS with %d VMs running", n), float64(rssKB(pid))/1024, up.Round(time.Second))
		if n == 50 {
			var noop []time.Duration
			for range 5 {
				_, d, err := apply(l, fleet(50, 0))
				if err != nil {
					return err
				}
				noop = append(noop, d)
			}
			fmt.Printf("%-46s %s (median of 5)\n", "apply of the unchanged 50-VM file", median(noop))
			var over, total, parse, stop, netw, prep, boot, cli []time.Duration
			for i := range 5 {
				changed := 7
				src := fleet(50, changed)
				if i%2 == 1 {
					src = fleet(50, 0) // change it back: every apply restarts t7
				}
				res, d, err := apply(l, src)
				if err != nil {
					return err
				}
				found := false
				for _, v := range res.VMs {
					if v.Name == fmt.Sprintf("t%d", changed) && v.Action == "restarted" {
						found = true
						total = append(total, d)
						stop = append(stop, secs(v.StopSeconds))
						prep = append(prep, secs(v.PrepareSeconds))
						boot = append(boot, secs(v.BootSeconds))
						// The daemon's own work: everything but the old
						// guest's shutdown and the new guest's boot.
						over = append(over, d-secs(v.StopSeconds)-secs(v.BootSeconds))
						cli = append(cli, d-secs(res.Seconds))
					}
				}
				if !found {
					return fmt.Errorf("t%d was not restarted: %+v", changed, res.VMs)
				}
				parse = append(parse, secs(res.Phases.Parse))
				netw = append(netw, secs(res.Phases.Network))
			}
			fmt.Printf("one-VM change in 50 (medians of 5):\n")
			for _, row := range []struct {
				name string
				ds   []time.Duration
			}{
				{"whole `microvm apply` (CLI process included)", total},
				{"  CLI process and API round trip", cli},
				{"  parse and validate", parse},
				{"  old guest's clean shutdown", stop},
				{"  network reconcile", netw},
				{"  prepare and start the hypervisor", prep},
				{"  guest boot to ready", boot},
				{"apply minus shutdown and boot", over},
			} {
				fmt.Printf("  %-46s %s\n", row.name, median(row.ds))
			}
		}
	}
	return nil
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[len(s)/2].Round(time.Millisecond)
}
