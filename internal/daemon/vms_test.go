package daemon

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/hostnet"
	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/state"
	"microvm.dev/microvm/internal/supervisor"
	"microvm.dev/microvm/internal/testutil"
	"microvm.dev/microvm/internal/testvmm"
)

// putLab is a daemon over a real host network in a namespace, with
// scripted hypervisors (testvmm), and a file with one VM of its own.
type putLab struct {
	env launch.Env
	l   *testvmm.Launcher
	d   *Daemon
}

const putFile = "host: { externalInterface: up0 }\nvms: { f: { index: 1 } }\n"

func newPutLab(t *testing.T, script func(*config.VM) testvmm.Behaviour) *putLab {
	testutil.RequireRoot(t)
	ns := testutil.NewNetns(t, "dput")
	ns.IP(t, "link", "add", "up0", "type", "bridge")
	st := t.TempDir()
	lab := &putLab{env: launch.Env{StateDir: st, RunDir: filepath.Join(st, "run"), NetNS: ns.Path}, l: &testvmm.Launcher{Script: script}}
	lab.d = lab.start(t)
	if _, err := lab.d.ApplyFile("t.yaml", []byte(putFile)); err != nil {
		t.Fatal(err)
	}
	return lab
}

// start starts a daemon on the lab's state directory.
func (lab *putLab) start(t *testing.T) *Daemon {
	d, err := NewWithLauncher(lab.env, lab.l, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

func (lab *putLab) state(t *testing.T, name string) supervisor.State {
	t.Helper()
	st, ok := lab.d.Status(name)
	if !ok {
		return ""
	}
	return st.State
}

// running waits a moment for the VM name to be running (Put returns once
// its hypervisor runs; the ready line comes just after) and says if it is.
func (lab *putLab) running(t *testing.T, name string) bool {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if lab.state(t, name) == supervisor.Running {
			return true
		}
	}
	return false
}

// One VM put through the API is created, left alone when put unchanged,
// restarted when its spec changes, and refused (nothing changed) when its
// entry has problems, names the file's VM, or clashes with another VM.
func TestPutOneVM(t *testing.T) {
	lab := newPutLab(t, nil)
	d := lab.d
	res, err := d.Put("p1", []byte(`{"index": 5, "memory": "256M"}`))
	if err != nil || res.VM.Action != "created" {
		t.Fatalf("put p1: %v %+v", err, res)
	}
	if !lab.running(t, "p1") {
		t.Fatalf("p1 is %s", lab.state(t, "p1"))
	}
	if res, err = d.Put("p1", []byte("index: 5\nmemory: 256M\n")); err != nil || res.VM.Action != "unchanged" || lab.l.Launches("p1") != 1 {
		t.Fatalf("put p1 again: %v %+v, %d launches", err, res, lab.l.Launches("p1"))
	}
	if res, err = d.Put("p1", []byte(`{"index": 5, "memory": "512M"}`)); err != nil || res.VM.Action != "restarted" || lab.l.Launches("p1") != 2 {
		t.Fatalf("put p1 changed: %v %+v, %d launches", err, res, lab.l.Launches("p1"))
	}

	res, err = d.Put("p1", []byte(`{"index": 5, "memory": "lots"}`))
	if !errors.Is(err, ErrInvalid) || len(res.Problems) == 0 || res.Problems[0].Path != "vms.p1.memory" {
		t.Fatalf("bad memory: %v %+v", err, res)
	}
	if st, _ := d.Status("p1"); !lab.running(t, "p1") || st.Spec.Memory != 512*config.MiB || lab.l.Launches("p1") != 2 {
		t.Fatalf("a refused put changed p1: %+v", st)
	}
	if _, err := d.Put("p2", []byte(`{"index": 1}`)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a VM on the file's VM's subnet: %v", err)
	}
	if _, ok := d.Status("p2"); ok {
		t.Fatal("a refused VM is listed")
	}
	if _, err := d.Put("f", []byte(`{"index": 1}`)); !errors.Is(err, ErrFileVM) {
		t.Fatalf("put the file's VM: %v", err)
	}
	if _, err := d.Put("p3", []byte("[1, 2]")); !errors.Is(err, ErrInvalid) {
		t.Fatalf("an entry that is no mapping: %v", err)
	}
	if _, err := os.Stat(state.Dir{Root: lab.env.StateDir}.APIVMPath("p2")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused VM was recorded: %v", err)
	}
}

// Put returns once the hypervisor runs: a VM whose guest is slow to be
// ready is Starting when Put returns, and a VM whose launch is slow (an
// image pull) does not hold up another VM's put.
func TestPutDoesNotWaitForOthers(t *testing.T) {
	release := make(chan struct{})
	lab := newPutLab(t, func(vm *config.VM) testvmm.Behaviour {
		switch vm.Name {
		case "slow":
			<-release
		case "never":
			return testvmm.Behaviour{NeverReady: true}
		}
		return testvmm.Behaviour{}
	})
	done := make(chan error, 1)
	go func() {
		_, err := lab.d.Put("slow", []byte(`{"index": 6}`))
		done <- err
	}()
	t0 := time.Now()
	if _, err := lab.d.Put("never", []byte(`{"index": 7}`)); err != nil {
		t.Fatal(err)
	}
	if s := lab.state(t, "never"); s != supervisor.Starting {
		t.Errorf("never is %s after its put", s)
	}
	if _, err := lab.d.Put("quick", []byte(`{"index": 8}`)); err != nil {
		t.Fatal(err)
	}
	if !lab.running(t, "quick") {
		t.Errorf("quick is %s", lab.state(t, "quick"))
	}
	select {
	case err := <-done:
		t.Fatalf("slow's put ended before its launch did: %v", err)
	default:
	}
	t.Logf("two puts beside a launch that hangs: %s", time.Since(t0))
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !lab.running(t, "slow") {
		t.Errorf("slow is %s", lab.state(t, "slow"))
	}
}

// The file's apply leaves the VMs put through the API alone, a restarted
// daemon has them again (adopted, not launched again), and Remove takes
// one out (the file's VMs are refused).
func TestPutVMsOutliveFileAndDaemon(t *testing.T) {
	lab := newPutLab(t, nil)
	if _, err := lab.d.Put("p1", []byte(`{"index": 5}`)); err != nil {
		t.Fatal(err)
	}
	res, err := lab.d.ApplyFile("t.yaml", []byte("host: { externalInterface: up0 }\nvms: { f: { index: 1, memory: 256M }, g: { index: 2 } }\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range res.VMs {
		if a.Name == "p1" {
			t.Fatalf("the file's apply did %s to p1", a.Action)
		}
	}
	if s := lab.state(t, "p1"); !lab.running(t, "p1") || lab.l.Launches("p1") != 1 {
		t.Fatalf("p1 after the file's apply: %s, %d launches", s, lab.l.Launches("p1"))
	}
	// A file that takes the name of a VM put through the API is refused.
	if _, err := lab.d.ApplyFile("t.yaml", []byte("host: { externalInterface: up0 }\nvms: { p1: { index: 3 } }\n")); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a file naming p1: %v", err)
	}

	lab.d.Close()
	lab.d = lab.start(t)
	if !lab.d.IsPut("p1") || !lab.running(t, "p1") { // adopted: its readiness is read again
		t.Fatalf("the restarted daemon lost p1: %v %s", lab.d.IsPut("p1"), lab.state(t, "p1"))
	}
	if _, err := lab.d.ApplyFile("t.yaml", []byte(putFile)); err != nil {
		t.Fatal(err)
	}
	if res, err := lab.d.Put("p1", []byte(`{"index": 5}`)); err != nil || res.VM.Action != "unchanged" || lab.l.Launches("p1") != 1 {
		t.Fatalf("put p1 after the restart: %v %+v, %d launches", err, res, lab.l.Launches("p1"))
	}

	if err := lab.d.Remove("f", false); err == nil || !strings.Contains(err.Error(), "applied file") {
		t.Fatalf("remove the file's VM: %v", err)
	}
	if err := lab.d.Remove("p1", true); err != nil {
		t.Fatal(err)
	}
	if _, ok := lab.d.Status("p1"); ok || lab.l.Running("p1") || lab.d.IsPut("p1") {
		t.Fatal("p1 is still there")
	}
	if _, err := os.Stat(state.Dir{Root: lab.env.StateDir}.VMDir("p1")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("p1's directory was not purged: %v", err)
	}
	lab.d.Close()
	lab.d = lab.start(t)
	if lab.d.IsPut("p1") {
		t.Fatal("a removed VM came back with the daemon")
	}
}

// A subnet that a removed VM's bridge still holds (its removal's
// reconcile under way, as when a pod is deleted and another created at
// once) is free for a VM put now: the reconcile deletes the old bridge
// before it makes the new one. Before, the put was refused as
// overlapping "the host's interface", and microvm-kubelet failed the pod.
func TestPutTakesASubnetAnOldBridgeHolds(t *testing.T) {
	lab := newPutLab(t, nil)
	ns := lab.env.NetNS
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", append([]string{"-n", filepath.Base(ns)}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	ip("link", "add", "br-gone", "type", "bridge")
	ip("link", "set", "br-gone", "alias", hostnet.AliasPrefix+"gone")
	ip("addr", "add", "10.244.1.33/29", "dev", "br-gone")
	res, err := lab.d.Put("k1", []byte("subnet: 10.244.1.32/29\n"))
	if err != nil {
		t.Fatalf("put: %v %+v", err, res)
	}
	if !lab.running(t, "k1") {
		t.Fatal("k1 is not running")
	}
	if out, _ := exec.Command("ip", "-n", filepath.Base(ns), "-br", "link").CombinedOutput(); strings.Contains(string(out), "br-gone") {
		t.Errorf("the old bridge is still there:\n%s", out)
	}
	// A foreign interface holding the subnet is still refused.
	ip("link", "add", "foreign0", "type", "bridge")
	ip("addr", "add", "10.244.1.41/29", "dev", "foreign0")
	if _, err := lab.d.Put("k2", []byte("subnet: 10.244.1.40/29\n")); !errors.Is(err, ErrInvalid) {
		t.Errorf("a subnet a foreign interface holds: %v", err)
	}
}
