package e2e

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/testutil"
	"microvm.dev/microvm/internal/vmmuser"
)

// TestSaveAndResume: real QEMU (TCG) saves a running guest to a file and a
// new QEMU resumes it: the same process (same pid, uptime continued), the
// file in its in-memory root, its clock set right. After a spec change the
// saved state is dropped and the VM boots cold, status saying why. A VM
// whose store QEMU cannot migrate (9p) is shut down cleanly instead. The
// host-shutdown path with save (stop --all --save, then a new daemon)
// resumes the saved VM and cold-boots the other with a clean volume.
func TestSaveAndResume(t *testing.T) {
	requireGuestEnv(t)
	l := newDaemonLab(t, "sav")
	file := filepath.Join(l.state, "infra.yaml")
	fleet := `defaults: { memory: 256M, stopTimeout: 20s, volumes: [{ name: data, mountPoint: /data, size: 64M }] }
vms:
  a: { index: 1, store: block ENV }
  b: { index: 2, store: 9p }
`
	write := func(env string) {
		os.WriteFile(file, []byte(strings.Replace(fleet, "ENV", env, 1)), 0o644)
	}
	write("")
	l.startDaemon(file)
	l.waitFor("a and b running", 4*time.Minute, allRunning("a", "b"))

	exec := func(vm, cmd string) (string, error) {
		out, err := l.cli("exec", vm, "--", "sh", "-c", cmd)
		return strings.TrimSpace(out), err
	}
	// A process, a file in the in-memory root, data written to a volume
	// but never synced.
	out, err := exec("a", "setsid sleep 100000 </dev/null >/dev/null 2>&1 & echo $!; echo here > /root/in-memory; echo unsynced > /data/written; cut -d' ' -f1 /proc/uptime")
	if err != nil {
		t.Fatalf("prepare a: %v\n%s", err, out)
	}
	fields := strings.Fields(out)
	if len(fields) != 2 {
		t.Fatalf("prepare a: %q", out)
	}
	pid, uptimeBefore := fields[0], parseFloat(t, fields[1])

	t0 := time.Now()
	out, err = l.cli("stop", "--save", "a")
	if err != nil || !strings.Contains(out, "a: saved (") {
		t.Fatalf("stop --save a: %v\n%s", err, out)
	}
	t.Logf("%s (%s by the clock)", strings.TrimSpace(out), time.Since(t0).Round(time.Millisecond))
	stateFile := filepath.Join(l.state, "vms", "a", "saved", "state")
	fi, err := os.Stat(stateFile)
	if err != nil {
		t.Fatalf("no state file after the save: %v", err)
	}
	if uid, ok := hypervisorUID(t, l.state, "a"); ok {
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != uid || fi.Mode().Perm() != 0o600 {
			t.Errorf("state file owned by %d mode %v; want the hypervisor's user %d, 0600", st.Uid, fi.Mode().Perm(), uid)
		}
	}
	if st := l.list()["a"]; st.State != apitypes.Saved || st.PID != 0 {
		t.Fatalf("a after the save: %+v", st)
	}

	// Saved for a while: a resumed clock that stood still would be behind.
	time.Sleep(5 * time.Second)
	t0 = time.Now()
	if out, err := l.cli("start", "a"); err != nil {
		t.Fatalf("start a: %v\n%s", err, out)
	}
	resumed := time.Since(t0)
	st := l.list()["a"]
	if st.State != apitypes.Running || !strings.HasPrefix(st.Boot, "resumed") {
		t.Fatalf("a after start: %+v", st)
	}
	out, err = exec("a", "kill -0 "+pid+" && cat /root/in-memory && cut -d' ' -f1 /proc/uptime && date +%s")
	if err != nil {
		t.Fatalf("a after the resume: %v\n%s", err, out)
	}
	fields = strings.Fields(out)
	if len(fields) != 3 || fields[0] != "here" {
		t.Fatalf("a after the resume: the process or the file is gone: %q", out)
	}
	uptimeAfter, guestNow := parseFloat(t, fields[1]), parseFloat(t, fields[2])
	if uptimeAfter < uptimeBefore {
		t.Errorf("uptime went from %.1f to %.1f: a new boot, not a resume", uptimeBefore, uptimeAfter)
	}
	if skew := guestNow - float64(time.Now().Unix()); skew < -2 || skew > 2 {
		t.Errorf("the resumed guest's clock is %.0f s off the host's", skew)
	}
	if _, err := os.Stat(stateFile); err == nil {
		t.Error("the state file (the guest's memory) was left after the resume")
	}
	t.Logf("resumed in %s (start to running, by the clock); uptime %.1f s → %.1f s", resumed.Round(time.Millisecond), uptimeBefore, uptimeAfter)

	// Saved, then the spec changes: the state is dropped, the VM boots cold
	// (the volume's data is there: the guest synced before the save).
	if out, err := l.cli("stop", "--save", "a"); err != nil || !strings.Contains(out, "saved (") {
		t.Fatalf("second save: %v\n%s", err, out)
	}
	write(", env: { CHANGED: yes }")
	if out, err := l.cli("apply", "-f", file); err != nil {
		t.Fatalf("apply the changed spec: %v\n%s", err, out)
	}
	l.waitFor("a running with the new spec", 3*time.Minute, allRunning("a"))
	st = l.list()["a"]
	if !strings.Contains(st.Boot, "cold boot: the saved state was dropped: the VM's spec changed") {
		t.Errorf("status after the spec change says %q", st.Boot)
	}
	if out, err := exec("a", "cat /data/written; test -e /root/in-memory && echo resumed || echo cold"); err != nil || out != "unsynced\ncold" {
		t.Errorf("a after the cold boot: %q %v (want the volume's data, and a fresh root)", out, err)
	}
	if _, err := os.Stat(stateFile); err == nil {
		t.Error("a dropped state file was left")
	}

	// A state file damaged on disk does not load: dropped, and the VM
	// boots cold in a new QEMU instead of failing.
	if out, err := l.cli("stop", "--save", "a"); err != nil || !strings.Contains(out, "saved (") {
		t.Fatalf("third save: %v\n%s", err, out)
	}
	fi, err = os.Stat(stateFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(stateFile, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	if out, err := l.cli("start", "a"); err != nil {
		t.Fatalf("start a on a damaged state: %v\n%s", err, out)
	}
	if st := l.list()["a"]; st.State != apitypes.Running || !strings.Contains(st.Boot, "cold boot: the saved state was dropped: it did not load") {
		t.Errorf("a after a damaged state: %s %q", st.State, st.Boot)
	}
	if out, err := exec("a", "cat /data/written"); err != nil || out != "unsynced" {
		t.Errorf("a's volume after the damaged state: %q %v", out, err)
	}

	// b's 9p store cannot be migrated: it is shut down cleanly instead.
	if out, err := exec("b", "echo kept > /data/unsynced"); err != nil {
		t.Fatalf("b: %v\n%s", err, out)
	}
	out, err = l.cli("stop", "--save", "b")
	if err != nil || !strings.Contains(out, "b: not saved (") || !strings.Contains(out, "shut down cleanly instead") {
		t.Fatalf("stop --save b: %v\n%s", err, out)
	}
	t.Log(strings.TrimSpace(out))
	if info := dumpe2fs(t, filepath.Join(l.state, "vms", "b", "data.img")); !strings.Contains(info, "Filesystem state:         clean") || strings.Contains(info, "needs_recovery") {
		t.Errorf("b's volume after the fallback shutdown:\n%s", info)
	}
	if out, err := l.cli("start", "b"); err != nil {
		t.Fatalf("start b: %v\n%s", err, out)
	}

	// The host shuts down with the save policy, and comes back.
	out, err = exec("a", "setsid sleep 100000 </dev/null >/dev/null 2>&1 & echo $!")
	if err != nil {
		t.Fatalf("a: %v\n%s", err, out)
	}
	pid = out
	// What the unit runs, with the save policy set as its defaults file says.
	out, err = l.cli(guestsUnitStop(t, "MICROVM_SAVE_ON_SHUTDOWN=true")...)
	if err != nil || !strings.Contains(out, "a: saved in") || !strings.Contains(out, "b: not saved (") {
		t.Fatalf("stop --all --save: %v\n%s", err, out)
	}
	t.Logf("stop --all --save: %s", strings.ReplaceAll(strings.TrimSpace(out), "\n", "; "))
	if info := dumpe2fs(t, filepath.Join(l.state, "vms", "b", "data.img")); !strings.Contains(info, "Filesystem state:         clean") || strings.Contains(info, "needs_recovery") {
		t.Errorf("b's volume after the host-shutdown path:\n%s", info)
	}
	l.daemon.Process.Signal(syscall.SIGTERM)
	l.daemon.Wait()
	l.startDaemon(file)
	l.waitFor("a and b back after the reboot", 4*time.Minute, allRunning("a", "b"))
	vms := l.list()
	if !strings.HasPrefix(vms["a"].Boot, "resumed") || vms["b"].Boot != "cold boot" {
		t.Errorf("after the reboot: a %q, b %q", vms["a"].Boot, vms["b"].Boot)
	}
	lost := int64(0)
	if out, err := exec("a", "kill -0 "+pid+" && echo alive"); err != nil || out != "alive" {
		t.Errorf("a's process after the reboot: %q %v", out, err)
		lost++
	}
	if out, err := exec("b", "cat /data/unsynced"); err != nil || out != "kept" {
		t.Errorf("b's data after the reboot: %q %v", out, err)
		lost += int64(len("kept\n"))
	}
	testutil.Report(t, testutil.FaultResult{Fault: "the host shutting down with save on: a VM on a block store and one on 9p", Trials: 1, LostBytes: lost,
		Result: "stop --all --save saves the block-store VM (resumed after the reboot, its process alive) and shuts the 9p one down cleanly (volume clean, data there)"})
}

// guestsUnitStop is the microvm arguments of microvm-guests.service's
// ExecStop with its environment: the unit's defaults overridden by set
// (what /etc/default/microvm-guests holds).
func guestsUnitStop(t *testing.T, set string) []string {
	t.Helper()
	b, err := os.ReadFile("../dist/microvm-guests.service")
	if err != nil {
		t.Fatal(err)
	}
	if d, err := os.ReadFile("../dist/microvm-guests.default"); err != nil || !strings.Contains(string(d), strings.Split(set, "=")[0]+"=") {
		t.Fatalf("the defaults file does not set %s: %v", set, err)
	}
	vars := map[string]string{}
	var argv []string
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Environment="); ok {
			k, val, _ := strings.Cut(v, "=")
			vars[k] = val
		}
		if v, ok := strings.CutPrefix(line, "ExecStop="); ok {
			argv = strings.Fields(v)
		}
	}
	k, val, _ := strings.Cut(set, "=")
	vars[k] = val
	if len(argv) < 2 || argv[0] != "/usr/bin/microvm" {
		t.Fatalf("ExecStop is not microvm: %v", argv)
	}
	for i, a := range argv {
		argv[i] = os.Expand(a, func(k string) string { return vars[k] })
	}
	return argv[1:]
}

// hypervisorUID is the uid vm's hypervisor runs as (its own id when the
// daemon has a range, else the microvm user's); false without that user.
func hypervisorUID(t *testing.T, stateDir, vm string) (uint32, bool) {
	u, err := user.Lookup("microvm")
	if err != nil {
		return 0, false
	}
	uid, _ := strconv.Atoi(u.Uid)
	b, err := os.ReadFile(filepath.Join(stateDir, "vms", vm, "identity"))
	if err != nil {
		return uint32(uid), true
	}
	r, ok, err := vmmuser.Subordinate("microvm", "/etc/subuid", "/etc/subgid")
	off, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || !ok {
		t.Fatalf("%s has an identity file but microvm no subordinate range: %v", vm, err)
	}
	return r.UID + uint32(off), true
}

func parseFloat(t *testing.T, s string) float64 {
	t.Helper()
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("not a number: %q", s)
	}
	return f
}
