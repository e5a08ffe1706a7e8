// Command uibench measures the web console (run as root, with bin/microvm,
// bin/microvm-init, a store holding the base image, Debian's chromium and
// playwright-core installed by scripts/test.sh): the time from navigating
// to the fleet page to its table showing every VM, with a fleet of tiny
// VMs running under the real daemon in a throwaway namespace, side by side
// in the same run with what a user would run instead, `microvm list`
// (process start to the table printed). It prints the medians and their
// ratio.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"microvm.dev/microvm/bench/lab"
)

func main() {
	bin := flag.String("bin", "bin", "directory holding microvm and microvm-init")
	store := flag.String("store", "", "store directory holding base/")
	vms := flag.Int("vms", 50, "VMs in the fleet")
	rounds := flag.Int("rounds", 15, "page loads (and list runs)")
	modules := flag.String("node-modules", "/var/cache/microvm/ui-tests", "where npm installed playwright-core")
	flag.Parse()
	if err := run(*bin, *store, *modules, *vms, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "uibench:", err)
		os.Exit(1)
	}
}

func fleet(n int) string {
	var b strings.Builder
	b.WriteString("defaults: { vcpu: 1, memory: 128M, stopTimeout: 5s }\nvms:\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "  t%d: { subnet: 10.%d.%d.0/24 }\n", i, 100+i/250, i%250)
	}
	return b.String()
}

func run(bin, store, modules string, n, rounds int) error {
	l, err := lab.New("uibench", bin, store)
	if err != nil {
		return err
	}
	defer l.Close()
	token := "uibench-token-0123456789abcdef"
	tokenFile := filepath.Join(l.State, "token")
	file := filepath.Join(l.State, "infra.yaml")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(file, []byte(fleet(n)), 0o644); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	addr := ln.Addr().String()
	ln.Close()
	if err := l.StartDaemon("--api-token-file", tokenFile, "--config", file, "--ui-listen", addr); err != nil {
		return err
	}
	t0 := time.Now()
	for {
		out, err := l.CLI("list", "-o", "json")
		if err == nil && strings.Count(string(out), `"state":"running"`)+strings.Count(string(out), `"state": "running"`) == n {
			break
		}
		if time.Since(t0) > 20*time.Minute {
			return fmt.Errorf("the %d VMs were not running within 20 minutes:\n%s", n, out)
		}
		time.Sleep(2 * time.Second)
	}
	fmt.Printf("%d VMs running after %s\n", n, time.Since(t0).Round(time.Second))

	// The page loads and the list runs alternate, a batch of each in turn.
	_, self, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(self), "pageload.mjs")
	var page, list []float64
	for range rounds / 5 {
		cmd := exec.Command("node", script)
		cmd.Env = append(os.Environ(), "UI_URL=http://"+addr, "UI_TOKEN="+token, "UI_NODE_MODULES="+modules, "VMS="+strconv.Itoa(n), "ROUNDS=5")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("page loads: %v\n%s", err, out)
		}
		for _, f := range strings.Fields(string(out)) {
			ms, err := strconv.ParseFloat(f, 64)
			if err != nil {
				return fmt.Errorf("page loads printed %q", out)
			}
			page = append(page, ms)
		}
		for range 5 {
			t := time.Now()
			if out, err := l.CLI("list"); err != nil {
				return fmt.Errorf("list: %v\n%s", err, out)
			}
			list = append(list, float64(time.Since(t).Microseconds())/1000)
		}
	}
	mp, ml := lab.Median(page), lab.Median(list)
	fmt.Printf("fleet page, navigation to %d rows: median %.0f ms over %d loads (%v)\n", n, mp, len(page), rounded(page))
	fmt.Printf("microvm list, start to exit:     median %.0f ms over %d runs (%v)\n", ml, len(list), rounded(list))
	fmt.Printf("ratio page/list: %.2fx\n", mp/ml)
	return nil
}

func rounded(xs []float64) []int {
	out := make([]int, len(xs))
	for i, x := range xs {
		out[i] = int(x + 0.5)
	}
	return out
}
