package main

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"microvm.dev/microvm/bench/lab"
	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/vmssh"
)

// runModules measures what the kernel's module tree disk costs a boot,
// with and without the disk, alternating, in one run: a busybox VM
// without volumes (the host's store share: the tree is then the only
// reason its guest loads ext4) and one with a volume (ext4 loaded anyway,
// as in the reference fleet).
func runModules(boots int, initDir, store string) error {
	l, err := lab.NewLaunch("bootbench", store, initDir, `vms:
  bare: { index: 3, vcpu: 2, memory: 1G }
  vol: { index: 4, vcpu: 2, memory: 1G, volumes: [{ name: data, mountPoint: /data, size: 1G }] }
`)
	if err != nil {
		return err
	}
	defer l.Close()
	times := samples{}
	add := times.add
	type kind struct {
		name, vm string
		off      bool
	}
	kinds := []kind{
		{"no volume, with the module tree", "bare", false}, {"no volume, without (before)", "bare", true},
		{"a volume, with the module tree", "vol", false}, {"a volume, without (before)", "vol", true},
	}
	for range boots {
		for _, k := range kinds {
			l.Env.NoModuleTree = k.off
			r, err := boot(l.Env, l.Config.VM(k.vm), l.NetNS, k.name, add)
			if err != nil {
				return err
			}
			if err := r.Stop(30 * time.Second); err != nil {
				return err
			}
		}
	}
	fmt.Printf("busybox VM, the host's store share, %d boots each, alternating:\n", boots)
	for _, k := range kinds {
		fmt.Printf("  %-34s prepare median %-8s ready median %-10s (p90 %s)  SSH median %-10s (p90 %s)\n", k.name,
			med(times[k.name+" prepare"]), med(times[k.name+" ready"]), p90(times[k.name+" ready"]), med(times[k.name+" ssh"]), p90(times[k.name+" ssh"]))
	}
	for i := 0; i < len(kinds); i += 2 {
		fmt.Printf("  %s: ready with / without = %.2fx\n", kinds[i].vm, float64(med(times[kinds[i].name+" ready"]))/float64(med(times[kinds[i+1].name+" ready"])))
	}
	return nil
}

// analyzeTotal is the total of `systemd-analyze`'s "Startup finished in
// … = 17.215s" line.
var analyzeTotal = regexp.MustCompile(`= (?:(\d+)min )?([0-9.]+)(ms|s)\s*$`)

// runMachines boots each image with its own init (init: image), the
// images alternating, and compares the time to microvm's ready report
// with the image's own account of its boot (systemd-analyze's total).
func runMachines(boots int, initDir, store string, images []string) error {
	var b strings.Builder
	b.WriteString("vms:\n")
	for i, img := range images {
		fmt.Fprintf(&b, "  m%d: { index: %d, vcpu: 2, memory: 1G, image: %s, init: image, stopTimeout: 60s }\n", i, 10+i, img)
	}
	l, err := lab.NewLaunch("bootbench", store, initDir, b.String())
	if err != nil {
		return err
	}
	defer l.Close()
	times := samples{}
	add := times.add
	for range boots {
		for i, img := range images {
			vm := l.Config.VM(fmt.Sprintf("m%d", i))
			r, err := boot(l.Env, vm, l.NetNS, img, add)
			if err != nil {
				return fmt.Errorf("%s: %w", img, err)
			}
			out, err := sshOutput(l.NetNS, r.Prepared, "systemd-analyze | head -1")
			if err != nil {
				return fmt.Errorf("%s: systemd-analyze: %w", img, err)
			}
			d, err := parseAnalyze(out)
			if err != nil {
				return fmt.Errorf("%s: %w", img, err)
			}
			add(img+" analyze", d)
			if err := r.Stop(time.Minute); err != nil {
				return err
			}
		}
	}
	fmt.Printf("machines with their own init (init: image), %d boots each, alternating:\n", boots)
	for _, img := range images {
		ready, analyze := med(times[img+" ready"]), med(times[img+" analyze"])
		fmt.Printf("  %-28s hypervisor start → ready median %-10s (p90 %s); systemd-analyze total median %-10s; ready / systemd-analyze = %.2fx\n",
			img, ready, p90(times[img+" ready"]), analyze, float64(ready)/float64(analyze))
	}
	return nil
}

func parseAnalyze(line string) (time.Duration, error) {
	m := analyzeTotal.FindStringSubmatch(strings.TrimSpace(line))
	if m == nil {
		return 0, fmt.Errorf("systemd-analyze said %q", line)
	}
	v, _ := strconv.ParseFloat(m[2], 64)
	if m[3] == "ms" {
		v /= 1000
	}
	if m[1] != "" {
		mins, _ := strconv.Atoi(m[1])
		v += float64(mins * 60)
	}
	return time.Duration(v * float64(time.Second)), nil
}

// sshOutput runs cmd in the VM over SSH and returns its output.
func sshOutput(nsPath string, p *launch.Prepared, cmd string) (string, error) {
	c, err := vmssh.Dial(filepath.Dir(filepath.Dir(filepath.Dir(p.Launch.ConsoleLog))), p.VM.Name, p.VM.Net.Address.String(), nsPath, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		return "", err
	}
	defer s.Close()
	out, err := s.CombinedOutput(cmd)
	return string(out), err
}
