// Package ksm sets and reads the host's kernel samepage merging
// (/sys/kernel/mm/ksm): the daemon turns it on with the file's settings
// (host.ksm) so that identical pages of VMs' memory (the same kernel and
// image in many guests) are kept once, and reads its counters for the
// metrics.
package ksm

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/config"
)

// Dir is KSM's directory in sysfs ("/sys/kernel/mm/ksm" on a host; a
// directory of a test's).
type Dir string

// Apply makes KSM run as k says: enabled with its pages to scan and sleep
// (defaults for zero), or stopped (run 0; merged pages stay merged until
// they are written). It says which settings it changed.
func (d Dir) Apply(k config.KSM) ([]string, error) {
	want := [][2]string{{"run", "0"}}
	if k.Enabled {
		pages, sleep := k.PagesToScan, k.Sleep
		if pages == 0 {
			pages = config.DefaultKSMPagesToScan
		}
		if sleep == 0 {
			sleep = config.DefaultKSMSleep
		}
		want = [][2]string{
			{"pages_to_scan", strconv.Itoa(pages)},
			{"sleep_millisecs", strconv.FormatInt(time.Duration(sleep).Milliseconds(), 10)},
			{"run", "1"},
		}
	}
	var changed []string
	for _, kv := range want {
		cur, err := d.read(kv[0])
		if err != nil {
			return changed, err
		}
		if cur == kv[1] {
			continue
		}
		if err := os.WriteFile(filepath.Join(string(d), kv[0]), []byte(kv[1]), 0o644); err != nil {
			return changed, fmt.Errorf("ksm: %s=%s: %w", kv[0], kv[1], err)
		}
		changed = append(changed, kv[0]+"="+kv[1])
	}
	return changed, nil
}

// Stats reads KSM's counters; general_profit (kernels before 6.4 lack it)
// is estimated from the pages saved.
func (d Dir) Stats() (apitypes.KSMStats, error) {
	var st apitypes.KSMStats
	run, err := d.read("run")
	if err != nil {
		return st, err
	}
	st.Running = run == "1"
	for name, dst := range map[string]*int64{"pages_shared": &st.PagesShared, "pages_sharing": &st.PagesSharing} {
		v, err := d.int(name)
		if err != nil {
			return st, err
		}
		*dst = v
	}
	if p, err := d.int("general_profit"); err == nil {
		st.ProfitBytes = p
	} else {
		st.ProfitBytes = st.PagesSharing * int64(os.Getpagesize())
	}
	return st, nil
}

func (d Dir) read(name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(string(d), name))
	if err != nil {
		return "", fmt.Errorf("ksm: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

func (d Dir) int(name string) (int64, error) {
	s, err := d.read(name)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("ksm: %s: %w", name, err)
	}
	return v, nil
}
