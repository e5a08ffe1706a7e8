package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/testutil"
)

const faultFleet = `defaults: { vcpu: 1, memory: %s, stopTimeout: 10s }
vms:
  f:
    index: 1
    volumes: [{ name: data, mountPoint: /data, size: 64M }]
`

// TestFaults injects faults into a running fleet and checks after each that
// no VM is lost, no byte of a file written (and synced) to the data volume
// before the fault is lost, and the daemon converges: the VM's hypervisor
// killed, virtiofsd killed under a running guest, and the daemon killed
// with -9 at seeded random moments of an apply that restarts the VM.
func TestFaults(t *testing.T) {
	requireGuestEnv(t)
	l := newDaemonLab(t, "flt")
	file := filepath.Join(l.state, "infra.yaml")
	write := func(mem string) { os.WriteFile(file, []byte(fmt.Sprintf(faultFleet, mem)), 0o644) }
	write("256M")
	l.startDaemon(file)
	vms := l.waitFor("f running", 3*time.Minute, allRunning("f"))

	// Data written and synced before any fault.
	if out, err := l.cli("exec", "f", "--", "sh", "-c", "head -c 1048576 /dev/urandom > /data/precious && sync && md5sum /data/precious"); err != nil {
		t.Fatalf("write the data: %v %s", err, out)
	}
	// The checksum, retried while the guest finishes booting (an adopted
	// VM counts as running from the moment it is adopted).
	sum := func() string {
		var out string
		var err error
		for range 60 {
			if out, err = l.cli("exec", "f", "--", "md5sum", "/data/precious"); err == nil {
				return strings.Fields(out)[0]
			}
			time.Sleep(time.Second)
		}
		return "unreadable: " + out
	}
	want := sum()
	lostBytes := func() int64 {
		if sum() != want {
			return 1 << 20
		}
		return 0
	}

	converge := func(what string, old int) (apitypes.VMStatus, float64) {
		t0 := time.Now()
		m := l.waitFor(what, 3*time.Minute, func(m map[string]apitypes.VMStatus) bool {
			return m["f"].State == apitypes.Running && m["f"].PID != old && alive(m["f"].PID)
		})
		return m["f"], time.Since(t0).Seconds()
	}

	// The hypervisor killed from outside, twice.
	var lost int64
	var slowest float64
	for range 2 {
		syscall.Kill(vms["f"].PID, syscall.SIGKILL)
		st, secs := converge("f restarted after its hypervisor was killed", vms["f"].PID)
		vms["f"], slowest = st, max(slowest, secs)
		lost += lostBytes()
	}
	testutil.Report(t, testutil.FaultResult{Fault: "the VM's hypervisor killed (SIGKILL)", Trials: 2, LostBytes: lost, Converge: slowest,
		Result: "restarted by the supervisor with backoff"})

	// virtiofsd killed under the running guest, twice.
	lost, slowest = 0, 0
	for range 2 {
		// virtiofsd only: QEMU's command line names the socket too.
		out, err := exec.Command("pgrep", "-f", "virtiofsd.*"+filepath.Join(l.state, "run", "vms", "f", "store.sock")).Output()
		pids := strings.Fields(string(out))
		if err != nil || len(pids) == 0 {
			t.Skipf("no virtiofsd serves the store here (shared over 9p): %v", err)
		}
		for _, p := range pids {
			if pid, err := strconv.Atoi(p); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		st, secs := converge("f restarted after virtiofsd was killed", vms["f"].PID)
		vms["f"], slowest = st, max(slowest, secs)
		lost += lostBytes()
	}
	if out, _ := l.cli("status", "f", "-o", "json"); !strings.Contains(out, "virtiofsd exited while the VM ran") {
		t.Errorf("the VM's last exit does not say why it was stopped:\n%s", out)
	}
	testutil.Report(t, testutil.FaultResult{Fault: "virtiofsd killed under a running guest", Trials: 2, LostBytes: lost, Converge: slowest,
		Result: "the hypervisor is stopped and the VM restarted"})

	// kill -9 of the daemon at seeded random moments of an apply.
	rng := rand.New(rand.NewPCG(2026, 11))
	// With TestDeployKills' 8, twenty seeded daemon kills in all.
	const trials = 12
	lost, slowest = 0, 0
	lostVMs := 0
	mems := []string{"288M", "256M"}
	for i := range trials {
		write(mems[i%2])
		apply := exec.Command(filepath.Join(shared.initDir, "microvm"), l.args("apply", "-f", file)...)
		apply.Start()
		time.Sleep(time.Duration(rng.IntN(4000)) * time.Millisecond)
		l.daemon.Process.Signal(syscall.SIGKILL)
		l.daemon.Wait()
		apply.Wait()
		t0 := time.Now()
		l.startDaemon(file)
		m := l.waitFor("the fleet converges after the daemon was killed mid-apply", 3*time.Minute, func(m map[string]apitypes.VMStatus) bool {
			return m["f"].State == apitypes.Running && m["f"].Spec != nil && m["f"].Spec.Memory.String() == mems[i%2]
		})
		slowest = max(slowest, time.Since(t0).Seconds())
		if !alive(m["f"].PID) {
			lostVMs++
		}
		lost += lostBytes()
	}
	testutil.Report(t, testutil.FaultResult{Fault: "the daemon killed (-9) at a random moment of an apply that restarts the VM (seeded)", Trials: trials,
		LostVMs: lostVMs, LostBytes: lost, Converge: slowest, Result: "the restarted daemon adopts or restarts the VM on the file's spec"})
	if lost != 0 || lostVMs != 0 {
		t.Errorf("lost %d bytes and %d VMs", lost, lostVMs)
	}
}

// plugUplink joins host to inet, the host's "internet": the host's
// uplink0 (203.0.113.1/24, its default route) to inet's wan0
// (203.0.113.2).
func plugUplink(t *testing.T, host, inet *testutil.Netns) {
	t.Helper()
	testutil.Veth(t, host, "uplink0", inet, "wan0")
	host.IP(t, "addr", "add", "203.0.113.1/24", "dev", "uplink0")
	host.IP(t, "link", "set", "uplink0", "up")
	host.IP(t, "route", "add", "default", "via", "203.0.113.2")
	inet.IP(t, "addr", "add", "203.0.113.2/24", "dev", "wan0")
	inet.IP(t, "link", "set", "wan0", "up")
}

// TestUplinkLoss takes the host's uplink away under a running fleet and
// brings it back: the VM loses the outside while it is gone and reaches it
// again once it is back, with no apply (NAT matches the uplink by name),
// and nothing else is disturbed.
func TestUplinkLoss(t *testing.T) {
	requireGuestEnv(t)
	l := newDaemonLab(t, "upl")
	inet := testutil.NewNetns(t, "upli")
	plug := func() { plugUplink(t, l.ns, inet) }
	plug()
	file := filepath.Join(l.state, "infra.yaml")
	os.WriteFile(file, []byte("vms: { u: { index: 1, vcpu: 1, memory: 256M } }\n"), 0o644)
	l.startDaemon(file)
	vms := l.waitFor("u running", 3*time.Minute, allRunning("u"))
	reach := func() bool {
		out, err := l.cli("exec", "u", "--", "sh", "-c", "ping -c 1 -W 2 203.0.113.2 >/dev/null && echo yes || echo no")
		return err == nil && strings.Contains(out, "yes")
	}
	if !reach() {
		t.Fatal("no way out before the fault")
	}
	l.ns.IP(t, "link", "del", "uplink0") // the uplink disappears
	if reach() {
		t.Error("the VM reaches the outside with the uplink gone")
	}
	t0 := time.Now()
	plug() // and comes back
	deadline := time.Now().Add(time.Minute)
	for !reach() {
		if time.Now().After(deadline) {
			t.Fatal("the VM does not reach the outside after the uplink came back")
		}
		time.Sleep(time.Second)
	}
	secs := time.Since(t0).Seconds()
	lostVMs := 0
	if now := l.list(); now["u"].PID != vms["u"].PID || now["u"].State != apitypes.Running {
		lostVMs = 1
		t.Errorf("the VM was disturbed: %+v", now["u"])
	}
	testutil.Report(t, testutil.FaultResult{Fault: "the uplink disappearing and coming back", Trials: 1, LostVMs: lostVMs, Converge: secs,
		Result: "the outside unreachable while it is gone, reachable again without an apply; the VM untouched"})
}
