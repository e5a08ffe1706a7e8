package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/deploy"
	"microvm.dev/microvm/internal/generation"
	"microvm.dev/microvm/internal/testutil"
)

// gitRepo is a bare remote and a working clone on disk.
type gitRepo struct {
	t            *testing.T
	remote, work string
}

func newGitRepo(t *testing.T) *gitRepo {
	t.Helper()
	dir := t.TempDir()
	r := &gitRepo{t: t, remote: filepath.Join(dir, "fleet.git"), work: filepath.Join(dir, "work")}
	r.git(dir, "init", "-q", "--bare", "-b", "main", r.remote)
	r.git(dir, "clone", "-q", r.remote, r.work)
	r.git(r.work, "checkout", "-q", "-b", "main")
	return r
}

func (r *gitRepo) git(dir string, args ...string) string {
	r.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=Ops", "GIT_AUTHOR_EMAIL=ops@example.com",
		"GIT_COMMITTER_NAME=Ops", "GIT_COMMITTER_EMAIL=ops@example.com", "GIT_CONFIG_GLOBAL=/dev/null")
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// push commits infra.yaml with content and pushes it; it returns the hash.
func (r *gitRepo) push(content, msg string) string {
	r.t.Helper()
	os.WriteFile(filepath.Join(r.work, "infra.yaml"), []byte(content), 0o644)
	r.git(r.work, "add", "infra.yaml")
	r.git(r.work, "commit", "-q", "-m", msg)
	r.git(r.work, "push", "-q", "-f", "origin", "main")
	return r.git(r.work, "rev-parse", "HEAD")
}

func (l *daemonLab) deployStatus() deploy.Status {
	l.t.Helper()
	out, err := l.cli("deploy", "status", "-o", "json")
	if err != nil {
		l.t.Fatalf("deploy status: %v\n%s", err, out)
	}
	var st deploy.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		l.t.Fatalf("deploy status: %v\n%s", err, out)
	}
	return st
}

// waitGeneration triggers a fetch and waits until generation n is final.
func (l *daemonLab) waitGeneration(n int, timeout time.Duration) *generation.Generation {
	l.t.Helper()
	l.cli("deploy", "trigger")
	deadline := time.Now().Add(timeout)
	for {
		st := l.deployStatus()
		if g := st.Last; g != nil && g.Number == n && g.Status != generation.Applying {
			return g
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("generation %d not final within %s: %+v\ndaemon log:\n%s", n, timeout, st.Last, l.log())
		}
		time.Sleep(500 * time.Millisecond)
	}
}

const gitFleet = `defaults: { vcpu: 1, memory: 256M, stopTimeout: 10s }
vms:
  a: { index: 1 }
  b: { index: 2, memory: %s%s }
`

func fleetFile(bMemory, bExtra string) string {
	return strings.Replace(strings.Replace(gitFleet, "%s%s", bMemory+bExtra, 1), "%s", "", 1)
}

// TestGitOpsDeploys drives the real daemon from a real git repository:
// a commit that changes one VM restarts that VM only; an invalid commit is
// refused with the fleet untouched; a commit whose VM never passes its
// health check is rolled back automatically; the hook sees the documented
// environment; the daemon killed with -9 in the middle of a deploy
// completes it (or rolls it back) when it starts again; with signatures
// required an unsigned commit is refused.
func TestGitOpsDeploys(t *testing.T) {
	requireGuestEnv(t)
	testutil.RequireCommand(t, "git")
	repo := newGitRepo(t)
	l := newDaemonLab(t, "gitops")
	hookOut := filepath.Join(l.state, "hook.env")
	hook := `env | grep ^MICROVM_ | sort > ` + hookOut + `.tmp && mv ` + hookOut + `.tmp ` + hookOut
	metricsAddr := testutil.FreeAddr(t)
	daemonArgs := []string{"--git-url", repo.remote, "--git-interval", "1h", "--health-timeout", "25s", "--post-deploy-hook", hook,
		"--metrics-listen", metricsAddr}

	first := repo.push(fleetFile("256M", ""), "two VMs")
	l.startDaemon("", daemonArgs...)
	g1 := l.waitGeneration(1, 3*time.Minute)
	if g1.Status != generation.Succeeded || g1.Commit.Hash != first {
		t.Fatalf("generation 1 = %+v", g1)
	}
	vms := l.waitFor("both VMs running", time.Minute, func(m map[string]apitypes.VMStatus) bool {
		return m["a"].State == apitypes.Running && m["b"].State == apitypes.Running
	})
	m := scrape(t, metricsAddr)
	for series, want := range map[string]float64{`microvm_vm_up{hypervisor="qemu",vm="a"}`: 1, `microvm_vm_up{hypervisor="qemu",vm="b"}`: 1,
		`microvm_vm_state{state="running",vm="b"}`: 1, `microvm_deploy_generation`: 1, `microvm_vm_vcpus{vm="a"}`: 1,
		`microvm_vm_memory_bytes{vm="b"}`: 256 << 20, `microvm_deploy_failures_total`: 0} {
		if got, ok := m[series]; !ok || got != want {
			t.Errorf("metrics after generation 1: %s = %v (present %t), want %v", series, got, ok, want)
		}
	}
	if m[`microvm_reconcile_duration_seconds_count{outcome="ok"}`] < 1 || m[`microvm_vm_boot_seconds{vm="a"}`] <= 0 {
		t.Errorf("no reconcile or boot time in the metrics")
	}
	hookEnv := waitFile(t, hookOut, first)
	for _, want := range []string{"MICROVM_GIT_SHA=" + first, "MICROVM_GIT_REF=main", "MICROVM_GIT_MSG=two VMs", "MICROVM_GENERATION=1",
		"MICROVM_STATUS=succeeded", "MICROVM_ERROR=", "MICROVM_VMS_ACTIVE=2", "MICROVM_VMS_TOTAL=2"} {
		if !strings.Contains(hookEnv, want+"\n") {
			t.Errorf("hook environment lacks %s:\n%s", want, hookEnv)
		}
	}

	// One VM changed: only it restarts.
	second := repo.push(fleetFile("320M", ""), "more memory for b")
	if g := l.waitGeneration(2, 3*time.Minute); g.Status != generation.Succeeded {
		t.Fatalf("generation 2 = %+v", g)
	}
	after := l.list()
	if after["a"].PID != vms["a"].PID {
		t.Errorf("a restarted (pid %d → %d) though it did not change", vms["a"].PID, after["a"].PID)
	}
	if after["b"].PID == vms["b"].PID || after["b"].Spec.Memory.MiB() != 320 {
		t.Errorf("b was not restarted with 320M: %+v", after["b"])
	}
	waitFile(t, hookOut, second)
	if m := scrape(t, metricsAddr); m["microvm_deploy_generation"] != 2 || m[`microvm_vm_memory_bytes{vm="b"}`] != 320<<20 {
		t.Errorf("metrics after generation 2: generation %v, b memory %v", m["microvm_deploy_generation"], m[`microvm_vm_memory_bytes{vm="b"}`])
	}

	// An invalid commit changes nothing.
	repo.push(fleetFile("320M", ", bogus: 1"), "typo")
	g3 := l.waitGeneration(3, time.Minute)
	if g3.Status != generation.Failed || !strings.Contains(g3.Error, "bogus") {
		t.Errorf("generation 3 = %s %q", g3.Status, g3.Error)
	}
	if now := l.list(); now["a"].PID != after["a"].PID || now["b"].PID != after["b"].PID {
		t.Error("an invalid commit restarted VMs")
	}
	if st := l.deployStatus(); st.Current == nil || st.Current.Number != 2 {
		t.Errorf("current = %+v, want generation 2", st.Current)
	}

	// A VM that never passes its health check: rolled back to generation 2.
	repo.push(fleetFile("288M", ", healthCheck: { tcp: 9 }"), "b must answer on 9")
	g4 := l.waitGeneration(4, 3*time.Minute)
	if g4.Status != generation.RolledBack || g4.RolledBackTo != 2 || !strings.Contains(g4.Error, "not healthy") {
		t.Errorf("generation 4 = %s to %d: %q", g4.Status, g4.RolledBackTo, g4.Error)
	}
	rolled := l.waitFor("b back on generation 2", time.Minute, func(m map[string]apitypes.VMStatus) bool {
		return m["b"].State == apitypes.Running && m["b"].Spec.Memory.MiB() == 320
	})
	if rolled["a"].PID != after["a"].PID {
		t.Error("the rollback restarted a")
	}
	if env := waitFile(t, hookOut, "MICROVM_GENERATION=4"); !strings.Contains(env, "MICROVM_STATUS=rolled-back\n") {
		t.Errorf("hook after the rollback:\n%s", env)
	}
	if m := scrape(t, metricsAddr); m["microvm_deploy_rollbacks_total"] != 1 || m["microvm_deploy_failures_total"] != 2 ||
		m["microvm_deploy_generation"] != 2 || m["microvm_deploy_last_attempt_generation"] != 4 {
		t.Errorf("metrics after the rollback: rollbacks %v, failures %v, generation %v, last attempt %v", m["microvm_deploy_rollbacks_total"],
			m["microvm_deploy_failures_total"], m["microvm_deploy_generation"], m["microvm_deploy_last_attempt_generation"])
	}
	// A VM killed from outside is restarted; the restart is counted.
	syscall.Kill(rolled["b"].PID, syscall.SIGKILL)
	rolled = l.waitFor("b restarted after a kill", time.Minute, func(m map[string]apitypes.VMStatus) bool {
		return m["b"].State == apitypes.Running && m["b"].PID != rolled["b"].PID
	})
	if m := scrape(t, metricsAddr); m[`microvm_vm_restarts_total{vm="b"}`] != 1 || m[`microvm_vm_restarts_total{vm="a"}`] != 0 {
		t.Errorf("restarts: b %v, a %v", m[`microvm_vm_restarts_total{vm="b"}`], m[`microvm_vm_restarts_total{vm="a"}`])
	}

	// kill -9 in the middle of a deploy: the next daemon completes it.
	fifth := repo.push(fleetFile("352M", ""), "b grows again")
	l.cli("deploy", "trigger")
	genFile := filepath.Join(l.state, "generations", "5.json")
	deadline := time.Now().Add(time.Minute)
	for {
		var g generation.Generation
		if b, err := os.ReadFile(genFile); err == nil && json.Unmarshal(b, &g) == nil && g.Status == generation.Applying {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("generation 5 never started applying; log:\n%s", l.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	l.daemon.Process.Kill()
	l.daemon.Wait()
	l.startDaemon("", daemonArgs...)
	deadline = time.Now().Add(3 * time.Minute)
	for {
		st := l.deployStatus()
		if st.Last != nil && st.Last.Number == 5 && st.Last.Status != generation.Applying {
			if st.Last.Status != generation.Succeeded || st.Current.Commit.Hash != fifth {
				t.Errorf("the interrupted deploy ended %s: %q", st.Last.Status, st.Last.Error)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the interrupted deploy did not finish; log:\n%s", l.log())
		}
		time.Sleep(500 * time.Millisecond)
	}
	final := l.waitFor("the fleet on generation 5", time.Minute, func(m map[string]apitypes.VMStatus) bool {
		return m["a"].State == apitypes.Running && m["b"].State == apitypes.Running && m["b"].Spec.Memory.MiB() == 352
	})
	if final["a"].PID != after["a"].PID {
		t.Error("a was restarted across the interrupted deploy")
	}

	// Signatures required: an unsigned commit is refused, the fleet stays.
	l.daemon.Process.Kill()
	l.daemon.Wait()
	keys := filepath.Join(l.state, "allowed_signers")
	os.WriteFile(keys, []byte("ops@example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGlrmKfA6K/ZhnXWFg/3+2cXLTlKQKp8mVYiFKsZLmDM\n"), 0o644)
	l.startDaemon("", append(daemonArgs, "--require-signed-by", keys)...)
	repo.push(fleetFile("384M", ""), "unsigned change")
	g6 := l.waitGeneration(6, time.Minute)
	if g6.Status != generation.Failed || !strings.Contains(g6.Error, "not signed") {
		t.Errorf("generation 6 = %s %q", g6.Status, g6.Error)
	}
	if now := l.list(); now["b"].PID != final["b"].PID || now["b"].Spec.Memory.MiB() != 352 {
		t.Error("an unsigned commit changed the fleet")
	}

	out, err := l.cli("deploy", "history")
	if err != nil || !strings.Contains(out, "rolled-back") || !strings.Contains(out, "b must answer on 9") {
		t.Errorf("history: %v\n%s", err, out)
	}
}

// scrape reads /metrics into series (name with labels, as exposed) → value.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// waitFile waits until path exists and contains want, and returns it.
func waitFile(t *testing.T, path, want string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), want) {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not contain %q:\n%s", path, want, b)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestDeployKills kills the daemon with -9 at seeded random moments of
// GitOps deploys that restart a VM, restarts it, and checks each time that
// the deploy ended (succeeded or rolled back), that the VM runs the spec of
// the generation that is current (never half-applied), and that data
// synced to its volume before the kill is intact.
func TestDeployKills(t *testing.T) {
	requireGuestEnv(t)
	testutil.RequireCommand(t, "git")
	repo := newGitRepo(t)
	l := newDaemonLab(t, "dkl")
	args := []string{"--git-url", repo.remote, "--git-interval", "1h", "--health-timeout", "60s"}
	fleet := func(mem string) string {
		return "defaults: { vcpu: 1, stopTimeout: 10s }\nvms:\n  k: { index: 1, memory: " + mem + ", volumes: [{ name: data, mountPoint: /data, size: 64M }] }\n"
	}
	repo.push(fleet("256M"), "first")
	l.startDaemon("", args...)
	l.waitGeneration(1, 3*time.Minute)
	l.waitFor("k running", 3*time.Minute, allRunning("k"))
	if out, err := l.cli("exec", "k", "--", "sh", "-c", "head -c 262144 /dev/urandom > /data/keep && sync"); err != nil {
		t.Fatalf("write: %v %s", err, out)
	}
	sum := func() string {
		for range 60 {
			if out, err := l.cli("exec", "k", "--", "md5sum", "/data/keep"); err == nil {
				return strings.Fields(out)[0]
			}
			time.Sleep(time.Second)
		}
		return "unreadable"
	}
	want := sum()
	rng := rand.New(rand.NewPCG(8, 2026))
	const trials = 8
	var lostBytes int64
	halfApplied, slowest := 0, 0.0
	mems := []string{"288M", "256M"}
	for i := range trials {
		repo.push(fleet(mems[i%2]), fmt.Sprintf("trial %d", i))
		l.cli("deploy", "trigger")
		time.Sleep(time.Duration(rng.IntN(5000)) * time.Millisecond)
		l.daemon.Process.Signal(syscall.SIGKILL)
		l.daemon.Wait()
		t0 := time.Now()
		l.startDaemon("", args...)
		st := l.waitGeneration(i+2, 3*time.Minute)
		m := l.waitFor("k running after the restart", 3*time.Minute, allRunning("k"))
		slowest = max(slowest, time.Since(t0).Seconds())
		var cur *generation.Generation
		if c := l.deployStatus().Current; c != nil {
			b, _ := os.ReadFile(filepath.Join(l.state, "generations", fmt.Sprintf("%d.json", c.Number)))
			json.Unmarshal(b, &cur)
		}
		if cur == nil || !strings.Contains(cur.Config, "memory: "+m["k"].Spec.Memory.String()) {
			halfApplied++
			t.Errorf("trial %d (%s): k runs %s, the current generation is %+v", i, st.Status, m["k"].Spec.Memory, cur)
		}
		if sum() != want {
			lostBytes += 262144
		}
	}
	testutil.Report(t, testutil.FaultResult{Fault: "the daemon killed (-9) at a random moment of a GitOps deploy that restarts the VM (seeded)", Trials: trials,
		LostVMs: halfApplied, LostBytes: lostBytes, Converge: slowest, Result: "each deploy completed or rolled back after the restart; the VM on the current generation's spec"})
	if lostBytes != 0 {
		t.Errorf("lost %d bytes", lostBytes)
	}
}
