package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/hostmem"
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

// TestMemoryTakenBackUnderPressure: under host.reclaim, the daemon takes
// memory back from a VM with a memoryMin while the host is short of it,
// and gives it back once it is not. The threshold is set above what this
// host has available (it is short at once), then below anything (it has
// memory again): the guest's own view shows its memory taken and given
// back, the daemon's status (QMP's balloon, and the guest's memory as the
// host holds it, from /proc) the balloon.
func TestMemoryTakenBackUnderPressure(t *testing.T) {
	requireGuestEnv(t)
	l := newDaemonLab(t, "rcl")
	avail, err := hostmem.Proc("/proc").Available()
	if err != nil {
		t.Fatal(err)
	}
	short := fmt.Sprintf("host: { reclaim: { below: %dM } }\n", avail>>20+1024)
	fleet := "vms: { m: { index: 1, memory: 1G, memoryMin: 384M, stopTimeout: 20s } }\n"
	l.startDaemon(l.writeFile(fleet), "--sample-every", "1s")
	l.waitFor("m running", 3*time.Minute, allRunning("m"))
	guestAvail := func() int {
		out, err := l.cli("exec", "m", "--", "sh", "-c", "grep MemAvailable /proc/meminfo")
		if err != nil {
			t.Fatalf("meminfo in m: %v\n%s", err, out)
		}
		f := strings.Fields(out)
		kb, err := strconv.Atoi(f[len(f)-2])
		if err != nil {
			t.Fatalf("meminfo in m: %q", out)
		}
		return kb / 1024
	}
	before := guestAvail()
	if before < 700 {
		t.Fatalf("the idle 1 GiB guest has only %d MiB available", before)
	}
	if out, err := l.cli("apply", "-f", l.writeFile(short+fleet)); err != nil {
		t.Fatalf("apply with the host short: %v\n%s", err, out)
	}
	taken := l.waitFor("m's memory taken back", time.Minute, func(vms map[string]apitypes.VMStatus) bool {
		m := vms["m"].HostMemory
		return m != nil && m.Balloon >= 600<<20
	})["m"].HostMemory
	if got := guestAvail(); got > 420 {
		t.Errorf("the guest has %d MiB available with its memory taken back to 384M (%d MiB before)", got, before)
	}
	if taken.Guest > 450<<20 {
		t.Errorf("the host holds %d MiB of the guest's memory with 640 MiB taken back", taken.Guest>>20)
	}
	if out, err := l.cli("status", "m"); err != nil || !strings.Contains(out, "taken back (host.reclaim)") {
		t.Errorf("status m: %v\n%s", err, out)
	}
	t.Logf("taken back: balloon %d MiB, guest on the host %d MiB, guest's MemAvailable %d MiB (%d MiB before)", taken.Balloon>>20, taken.Guest>>20, guestAvail(), before)

	if out, err := l.cli("apply", "-f", l.writeFile("host: { reclaim: { below: 1M } }\n"+fleet)); err != nil {
		t.Fatalf("apply with the host not short: %v\n%s", err, out)
	}
	l.waitFor("m's memory given back", time.Minute, func(vms map[string]apitypes.VMStatus) bool {
		m := vms["m"].HostMemory
		return m != nil && m.Balloon == 0
	})
	if got := guestAvail(); got < before-100 {
		t.Errorf("the guest has %d MiB available after its memory was given back (%d MiB before)", got, before)
	}
}
