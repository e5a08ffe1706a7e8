// Package cgroup caps a VM's hypervisor process with Linux control groups:
// CPU weight, a CPU-time ceiling and a memory ceiling. It works with the
// unified hierarchy (cgroup v2) when the cpu and memory controllers are
// available there, and with the legacy cpu and memory hierarchies (cgroup
// v1) otherwise; hosts in hybrid mode usually have their controllers in v1.
// Each VM gets its own group named after it under a "microvm" parent.
package cgroup

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Parent is the group every VM's group is created under.
const Parent = "microvm"

// DefaultRoot is where cgroup hierarchies are mounted.
const DefaultRoot = "/sys/fs/cgroup"

// Limits are the caps for one VM's hypervisor; zero fields are not set.
type Limits struct {
	// CPUWeight is the relative share of CPU time, 1-10000 (100 = default).
	CPUWeight int
	// CPUs is the CPU-time ceiling in CPUs (1.5 = one and a half CPUs).
	CPUs float64
	// MemoryMax is the memory ceiling in bytes.
	MemoryMax int64
}

// IsZero reports whether no limit is set.
func (l Limits) IsZero() bool { return l == Limits{} }

// Manager creates, fills and removes the VMs' groups.
type Manager struct {
	// v2 is the unified hierarchy's mount point when it carries the cpu and
	// memory controllers; empty otherwise.
	v2 string
	// cpuV1 and memV1 are the legacy hierarchies' mount points.
	cpuV1, memV1 string
}

// cpuPeriod is the CFS period used for the CPU ceiling (100 ms, the kernel's default).
const cpuPeriod = 100000

// Detect finds the cgroup hierarchies under root (normally /sys/fs/cgroup).
// It fails when neither v2 with the cpu and memory controllers nor the v1
// cpu and memory hierarchies are mounted.
func Detect(root string) (*Manager, error) {
	for _, cand := range []string{root, filepath.Join(root, "unified")} {
		if !isFS(cand, unix.CGROUP2_SUPER_MAGIC) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(cand, "cgroup.controllers"))
		if err != nil {
			continue
		}
		have := strings.Fields(string(b))
		if slices.Contains(have, "cpu") && slices.Contains(have, "memory") {
			return &Manager{v2: cand}, nil
		}
	}
	m := &Manager{}
	for _, c := range []struct {
		name string
		dst  *string
	}{{"cpu", &m.cpuV1}, {"memory", &m.memV1}} {
		for _, cand := range []string{filepath.Join(root, c.name), filepath.Join(root, "cpu,cpuacct")} {
			if isFS(cand, unix.CGROUP_SUPER_MAGIC) && exists(filepath.Join(cand, "cgroup.procs")) {
				if c.name == "memory" && !exists(filepath.Join(cand, "memory.limit_in_bytes")) {
					continue
				}
				if c.name == "cpu" && !exists(filepath.Join(cand, "cpu.shares")) {
					continue
				}
				*c.dst = cand
				break
			}
		}
	}
	if m.cpuV1 == "" || m.memV1 == "" {
		return nil, fmt.Errorf("no usable cgroups under %s: neither cgroup v2 with the cpu and memory controllers nor the v1 cpu and memory hierarchies are mounted", root)
	}
	return m, nil
}

// Version is 2 for the unified hierarchy, 1 for the legacy one.
func (m *Manager) Version() int {
	if m.v2 != "" {
		return 2
	}
	return 1
}

// Dirs are the group directories of vm (one for v2, cpu then memory for v1).
func (m *Manager) Dirs(vm string) []string {
	if m.v2 != "" {
		return []string{filepath.Join(m.v2, Parent, vm)}
	}
	return []string{filepath.Join(m.cpuV1, Parent, vm), filepath.Join(m.memV1, Parent, vm)}
}

// Create makes vm's group (or reuses it) with l set. Limits that are zero
// are reset to "no limit", so a changed spec never keeps an old cap.
func (m *Manager) Create(vm string, l Limits) error {
	if m.v2 != "" {
		parent := filepath.Join(m.v2, Parent)
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return fmt.Errorf("cgroup %s: %w", parent, err)
		}
		// Controllers must be enabled in the parents for the child's files to exist.
		for _, d := range []string{m.v2, parent} {
			if err := write(filepath.Join(d, "cgroup.subtree_control"), "+cpu +memory"); err != nil {
				return err
			}
		}
		dir := m.Dirs(vm)[0]
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("cgroup %s: %w", dir, err)
		}
		weight, max, mem := "100", "max "+strconv.Itoa(cpuPeriod), "max"
		if l.CPUWeight > 0 {
			weight = strconv.Itoa(l.CPUWeight)
		}
		if l.CPUs > 0 {
			max = fmt.Sprintf("%d %d", quota(l.CPUs), cpuPeriod)
		}
		if l.MemoryMax > 0 {
			mem = strconv.FormatInt(l.MemoryMax, 10)
		}
		return writeAll(dir, [][2]string{{"cpu.weight", weight}, {"cpu.max", max}, {"memory.max", mem}})
	}
	dirs := m.Dirs(vm)
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("cgroup %s: %w", d, err)
		}
	}
	// cpu.shares is the v1 weight: 1024 is the default, as cpu.weight 100 is.
	shares, q, mem := "1024", "-1", "-1"
	if l.CPUWeight > 0 {
		shares = strconv.Itoa(max(2, l.CPUWeight*1024/100))
	}
	if l.CPUs > 0 {
		q = strconv.Itoa(quota(l.CPUs))
	}
	if l.MemoryMax > 0 {
		mem = strconv.FormatInt(l.MemoryMax, 10)
	}
	if err := writeAll(dirs[0], [][2]string{{"cpu.shares", shares}, {"cpu.cfs_period_us", strconv.Itoa(cpuPeriod)}, {"cpu.cfs_quota_us", q}}); err != nil {
		return err
	}
	return writeAll(dirs[1], [][2]string{{"memory.limit_in_bytes", mem}})
}

// StartDir is the directory whose descriptor a process may be started in
// directly (clone3 CLONE_INTO_CGROUP, cgroup v2 only); "" for v1.
func (m *Manager) StartDir(vm string) string {
	if m.v2 != "" {
		return m.Dirs(vm)[0]
	}
	return ""
}

// Place moves pid into vm's group.
func (m *Manager) Place(vm string, pid int) error {
	for _, d := range m.Dirs(vm) {
		if err := write(filepath.Join(d, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			return err
		}
	}
	return nil
}

// Contains reports whether pid is in vm's group.
func (m *Manager) Contains(vm string, pid int) bool {
	for _, d := range m.Dirs(vm) {
		b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err != nil || !slices.Contains(strings.Fields(string(b)), strconv.Itoa(pid)) {
			return false
		}
	}
	return true
}

// Remove deletes vm's group once it has no processes left; a group that
// does not exist is not an error.
func (m *Manager) Remove(vm string) error {
	var errs []error
	for _, d := range m.Dirs(vm) {
		if err := unix.Rmdir(d); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// quota is the CFS quota in µs per period for a ceiling of cpus CPUs.
func quota(cpus float64) int {
	return max(1000, int(math.Round(cpus*cpuPeriod)))
}

func writeAll(dir string, files [][2]string) error {
	for _, f := range files {
		if err := write(filepath.Join(dir, f[0]), f[1]); err != nil {
			return err
		}
	}
	return nil
}

func write(path, value string) error {
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("cgroup: write %q to %s: %w", value, path, err)
	}
	return nil
}

func isFS(path string, magic int64) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && int64(st.Type) == magic
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
