package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const verifyFleet = `defaults:
  vcpu: 1
  memory: 256M
  volumes: [{ name: data, mountPoint: /mnt/storage, size: 64M }]
vms:
  a: { index: 1 }
  b: { index: 2 }
  c: { index: 3 }
network:
  allow: [{ from: a, to: b, ports: [5432] }]
`

// TestVerifyLiveFleet runs `microvm verify` against a fleet the daemon runs:
// every check passes; then isolation is broken by hand (an accept rule at
// the top of the VM-to-VM chain, in the test's namespace) and verify fails,
// naming the pairs that can now reach each other: the checker can fail.
func TestVerifyLiveFleet(t *testing.T) {
	requireGuestEnv(t)
	l := newDaemonLab(t, "vfy")
	file := filepath.Join(l.state, "infra.yaml")
	os.WriteFile(file, []byte(verifyFleet), 0o644)
	l.startDaemon(file)
	l.waitFor("three VMs running", 4*time.Minute, allRunning("a", "b", "c"))

	out, err := l.cli("verify", "-f", file, "-o", "json")
	var res struct {
		Results []struct{ Name, Status, Evidence string }
		Failed  int
	}
	if jerr := json.Unmarshal([]byte(out), &res); jerr != nil {
		t.Fatalf("verify: %v %v\n%s", err, jerr, out)
	}
	got := map[string]string{}
	for _, r := range res.Results {
		got[r.Name] = r.Status
		if r.Status == "FAIL" {
			t.Errorf("FAIL %s: %s", r.Name, r.Evidence)
		}
	}
	if err != nil || res.Failed != 0 {
		t.Errorf("verify failed (%v); log:\n%s", err, l.log())
	}
	for _, want := range []string{"bridge br-a", "ip forwarding", "a running", "a over SSH", "a store read-only", "a /var ephemeral",
		"a volume data", "a → gateway", "a isolation", "b isolation", "c isolation", "hypervisor qemu", "a hypervisor privileges"} {
		if got[want] != "PASS" {
			t.Errorf("%s = %q, want PASS", want, got[want])
		}
	}
	for _, r := range res.Results {
		if r.Name == "a isolation" && !strings.Contains(r.Evidence, "reaches allowed b:5432") {
			t.Errorf("a isolation evidence: %s", r.Evidence)
		}
	}

	// A real VM trying the host's own services: a TCP service listening on
	// every address of the host (its gateway address included) is out of
	// reach; only ICMP to the VM's own gateway passes.
	l.ns.Serve(t, "0.0.0.0:7777")
	if out, err := l.cli("exec", "a", "--", "sh", "-c", "nc -w 3 10.1.0.1 7777 </dev/null; echo rc=$?"); err != nil || !strings.Contains(out, "rc=1") || strings.Contains(out, "10.1.0.2") {
		t.Errorf("a VM reached a host service: %v %q", err, out)
	}
	if out, err := l.cli("exec", "a", "--", "sh", "-c", "nc -w 3 10.2.0.1 7777 </dev/null; echo rc=$?"); err != nil || !strings.Contains(out, "rc=1") || strings.Contains(out, "10.1.0.2") {
		t.Errorf("a VM reached a host service through another bridge's address: %v %q", err, out)
	}

	// The daemon's own log is reachable through the CLI.
	if out, err := l.cli("logs", "--daemon"); err != nil || !strings.Contains(out, `msg="VM ready" component=supervisor vm=a`) {
		t.Errorf("logs --daemon: %v\n%s", err, out)
	}
	// QEMU writes the console log in append mode, so copy-truncate rotation
	// is safe while it runs.
	vms := l.list()
	if !appendMode(t, vms["a"].PID, filepath.Join(l.state, "vms", "a", "console.log")) {
		t.Error("QEMU's console log is not opened with O_APPEND")
	}

	// Break isolation by hand in the lab's namespace.
	if out, err := l.ns.Exec("nft", "insert", "rule", "inet", "microvm", "vm_to_vm", "accept"); err != nil {
		t.Fatalf("nft: %v %s", err, out)
	}
	out, err = l.cli("verify", "-f", file)
	if err == nil {
		t.Fatalf("verify passed with isolation broken:\n%s", out)
	}
	for _, want := range []string{"FAIL  b isolation", "b → c (10.3.0.2:22) is reachable", "b → c ([fd6d:6963:a03::2]:22) is reachable", "FAIL  c isolation", "c → a"} {
		if !strings.Contains(out, want) {
			t.Errorf("verify output lacks %q:\n%s", want, out)
		}
	}
}

// appendMode reports whether process pid holds path open with O_APPEND.
func appendMode(t *testing.T, pid int, path string) bool {
	t.Helper()
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
	for _, fd := range fds {
		if target, err := os.Readlink(fd); err != nil || target != path {
			continue
		}
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, filepath.Base(fd)))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				flags, _ := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
				return flags&syscall.O_APPEND != 0
			}
		}
	}
	t.Errorf("pid %d does not hold %s open", pid, path)
	return false
}
