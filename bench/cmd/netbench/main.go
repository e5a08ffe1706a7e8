// Command netbench measures microvm's host network reconcile inside a
// throwaway network namespace (run as root): applying N VMs from scratch, a
// no-op reconcile of N VMs, IPv4 only and dual-stack side by side, and in
// the same run the reference setup's isolation (one DROP rule per ordered
// pair of VM bridges) loaded with nft on the same bridges. It prints
// medians of -runs trials.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"

	"microvm.dev/microvm/bench"
	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/firewall"
	"microvm.dev/microvm/internal/hostnet"
	"microvm.dev/microvm/internal/network"
)

func main() {
	sizes := flag.String("sizes", "10,100,500", "fleet sizes")
	runs := flag.Int("runs", 5, "trials per measurement (the median is printed)")
	flag.Parse()
	if err := run(*sizes, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "netbench:", err)
		os.Exit(1)
	}
}

func run(sizes string, runs int) error {
	ns := fmt.Sprintf("netbench%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	path := "/run/netns/" + ns
	// An uplink with a default route, so NAT is rendered as on a real host.
	for _, args := range [][]string{
		{"link", "add", "uplink0", "type", "bridge"},
		{"addr", "add", "203.0.113.1/24", "dev", "uplink0"},
		{"link", "set", "uplink0", "up"},
		{"route", "add", "default", "via", "203.0.113.2"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %v: %v: %s", args, err, out)
		}
	}
	m, err := network.New(path, hostnet.Options{})
	if err != nil {
		return err
	}
	defer m.Close()

	fmt.Printf("%-6s %-40s %10s %12s\n", "VMs", "measurement", "median", "rules")
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(s)
		if err != nil {
			return err
		}
		dual := bench.FleetYAML(n)
		v4only := bytes.Replace(dual, []byte("host: { "), []byte("host: { ipv6Prefix: none, "), 1)
		for _, variant := range []struct {
			name string
			yaml []byte
		}{{"IPv4 only", v4only}, {"dual-stack", dual}} {
			cfg, err := config.Parse("fleet.yaml", variant.yaml, config.Options{})
			if err != nil {
				return err
			}
			scratch, noop, fwOnly, err := measure(m, path, cfg, runs)
			if err != nil {
				return fmt.Errorf("%d VMs, %s: %w", n, variant.name, err)
			}
			rules := firewall.RuleCount(firewall.Render(cfg, firewall.Options{Uplink: "uplink0"}).Body)
			fmt.Printf("%-6d %-40s %10s %12d\n", n, "microvm apply from scratch, "+variant.name, median(scratch), rules)
			fmt.Printf("%-6d %-40s %10s %12s\n", n, "microvm no-op reconcile, "+variant.name, median(noop), "")
			fmt.Printf("%-6d %-40s %10s %12d\n", n, "microvm table load only, "+variant.name, median(fwOnly), rules)
		}
		// The reference approach on the same bridges, in its own table.
		cfg, err := config.Parse("fleet.yaml", v4only, config.Options{})
		if err != nil {
			return err
		}
		var pairwise []time.Duration
		script := pairwiseScript(cfg)
		for range runs {
			t0 := time.Now()
			if err := nft(path, script); err != nil {
				return err
			}
			pairwise = append(pairwise, time.Since(t0))
			if err := nft(path, "delete table inet refiso\n"); err != nil {
				return err
			}
		}
		fmt.Printf("%-6d %-40s %10s %12d\n", n, "reference pairwise DROPs", median(pairwise), n*(n-1))
	}
	_, err = m.Teardown()
	return err
}

// measure applies cfg from scratch, then again (a no-op), then loads its
// table alone from scratch, runs times each.
func measure(m *network.Manager, path string, cfg *config.Config, runs int) (scratch, noop, fwOnly []time.Duration, err error) {
	rs := firewall.Render(cfg, firewall.Options{Uplink: "uplink0"})
	for range runs {
		if _, err := m.Teardown(); err != nil {
			return nil, nil, nil, err
		}
		t0 := time.Now()
		if _, err := m.Apply(cfg); err != nil {
			return nil, nil, nil, err
		}
		scratch = append(scratch, time.Since(t0))
		t0 = time.Now()
		res, err := m.Apply(cfg)
		if err != nil {
			return nil, nil, nil, err
		}
		noop = append(noop, time.Since(t0))
		if res.Changed() {
			return nil, nil, nil, fmt.Errorf("the second apply changed %v", res.Links)
		}
		// The firewall alone, replaced from scratch (table absent).
		fw := &firewall.Applier{NetNS: path}
		if _, err := fw.Remove(); err != nil {
			return nil, nil, nil, err
		}
		t0 = time.Now()
		if _, err := fw.Apply(rs); err != nil {
			return nil, nil, nil, err
		}
		fwOnly = append(fwOnly, time.Since(t0))
	}
	return scratch, noop, fwOnly, nil
}

// pairwiseScript is the reference setup's isolation: for every ordered pair
// of VM bridges, one rule dropping forwarded traffic between them.
func pairwiseScript(cfg *config.Config) string {
	var b strings.Builder
	b.WriteString("table inet refiso {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n")
	for _, a := range cfg.VMs {
		for _, c := range cfg.VMs {
			if a != c {
				fmt.Fprintf(&b, "\t\tiifname %q oifname %q drop\n", a.Net.Bridge, c.Net.Bridge)
			}
		}
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

func nft(nsPath, script string) error {
	cmd := exec.Command("nsenter", "--net="+nsPath, "--", "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %v: %.500s", err, out)
	}
	return nil
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2].Round(100 * time.Microsecond)
}
