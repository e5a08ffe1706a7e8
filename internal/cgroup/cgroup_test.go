package cgroup

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"microvm.dev/microvm/internal/testutil"
)

// TestLimitsOnRealProcess creates a group on this machine's own cgroup
// hierarchy (v1 or v2, whichever carries the controllers), caps a real
// process with it and reads the kernel's files back.
func TestLimitsOnRealProcess(t *testing.T) {
	testutil.RequireRoot(t)
	m, err := Detect("/sys/fs/cgroup")
	if err != nil {
		t.Skipf("no cgroups here: %v", err)
	}
	name := "test-" + filepath.Base(t.TempDir())
	if err := m.Create(name, Limits{CPUWeight: 50, CPUs: 0.5, MemoryMax: 256 << 20}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Remove(name) })
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	if err := m.Place(name, cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if !m.Contains(name, cmd.Process.Pid) {
		t.Fatal("the process is not in its group")
	}
	read := func(dir, file string) string {
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	dirs := m.Dirs(name)
	want := map[string]string{"cpu.weight": "50", "cpu.max": "50000 100000", "memory.max": "268435456"}
	if m.Version() == 1 {
		want = map[string]string{"cpu.shares": "512", "cpu.cfs_quota_us": "50000", "memory.limit_in_bytes": "268435456"}
	}
	for file, v := range want {
		dir := dirs[0]
		if strings.HasPrefix(file, "memory") {
			dir = dirs[len(dirs)-1]
		}
		if got := read(dir, file); got != v {
			t.Errorf("v%d %s = %q, want %q", m.Version(), file, got, v)
		}
	}
	// A changed spec without limits resets them.
	if err := m.Create(name, Limits{}); err != nil {
		t.Fatal(err)
	}
	if m.Version() == 1 {
		if got := read(dirs[0], "cpu.cfs_quota_us"); got != "-1" {
			t.Errorf("quota after reset = %s", got)
		}
	} else if got := read(dirs[0], "cpu.max"); !strings.HasPrefix(got, "max") {
		t.Errorf("cpu.max after reset = %s", got)
	}
	if err := m.Remove(name); err == nil {
		t.Error("removed a group that still holds a process")
	}
	cmd.Process.Kill()
	cmd.Wait()
	if err := m.Remove(name); err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s still exists", d)
		}
	}
}

func TestDetectRejectsPlainDirectory(t *testing.T) {
	if _, err := Detect(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no usable cgroups") {
		t.Fatalf("err = %v", err)
	}
}

func TestQuota(t *testing.T) {
	for cpus, want := range map[float64]int{1: 100000, 1.5: 150000, 0.01: 1000, 0.001: 1000} {
		if got := quota(cpus); got != want {
			t.Errorf("quota(%g) = %d, want %d", cpus, got, want)
		}
	}
}
