package e2e

import (
	"strconv"
	"testing"
	"time"
)

// TestFreedMemoryGoesBack: a guest that allocates 512 MiB and frees it
// gives it back to the host (free page reporting through the balloon
// device): within a minute the hypervisor's resident memory, read from
// the host, is within 64 MiB of what it was before the allocation. The
// VM's store is the host's share (virtiofs where a virtiofsd is
// installed: its guest memory is the memfd shared with virtiofsd).
func TestFreedMemoryGoesBack(t *testing.T) {
	requireGuestEnv(t)
	ns, cfg := netLab(t, "fpr", "vms: { m: { index: 1, memory: 1G } }\n")
	env := newEnv(t, ns)
	p, r := boot(t, env, cfg.VM("m"))
	c := sshTo(t, ns, p)
	pid := r.Process.Pid
	// Settled: what the idle guest holds.
	time.Sleep(5 * time.Second)
	before := rssMiB(t, pid)
	run(t, c, "dd if=/dev/zero of=/dev/null bs=512M count=1 2>/dev/null && grep MemFree /proc/meminfo")
	peak := rssMiB(t, pid)
	if peak < before+400 {
		t.Fatalf("the guest's 512 MiB never reached the host (before %d MiB, after %d MiB): nothing to give back", before, peak)
	}
	t0 := time.Now()
	for {
		now := rssMiB(t, pid)
		if now <= before+64 {
			t.Logf("resident: %d MiB idle, %d MiB after the guest touched 512 MiB, %d MiB %s after it freed them", before, peak, now, time.Since(t0).Round(time.Second))
			break
		}
		if time.Since(t0) > time.Minute {
			t.Fatalf("resident: %d MiB idle, %d MiB with the allocation, still %d MiB a minute after the guest freed it", before, peak, now)
		}
		time.Sleep(2 * time.Second)
	}
	stop(t, r)
}

// rssMiB is a process's resident memory (anonymous, file and shared
// memory, which a shared memfd's guest RAM is), in MiB.
func rssMiB(t *testing.T, pid int) int {
	t.Helper()
	kb, err := strconv.Atoi(procField(t, pid, "VmRSS"))
	if err != nil {
		t.Fatal(err)
	}
	return kb / 1024
}
