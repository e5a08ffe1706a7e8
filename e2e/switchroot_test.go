package e2e

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestImageInit hands PID 1 to the image's own init (init: image): the
// busybox base image's init takes over the console, the network set up
// before the hand-over answers, microvm's agent answers SSH as one of its
// services, and the VM still stops on request.
func TestImageInit(t *testing.T) {
	requireGuestEnv(t)
	ns, cfg := netLab(t, "swr", "vms: { vm1: { index: 1, memory: 512M, init: image } }")
	env := newEnv(t, ns)
	p, r := boot(t, env, cfg.VM("vm1"))
	deadline := time.Now().Add(60 * time.Second)
	var console string
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(p.Launch.ConsoleLog)
		console = string(b)
		if strings.Contains(console, "activate this console") {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(console, "init=init state=running") || !strings.Contains(console, "activate this console") {
		t.Fatalf("busybox init did not take over the console:\n%s", console)
	}
	if !ns.Ping(t, "10.1.0.2") {
		t.Error("the VM's network, configured before the hand-over, does not answer")
	}
	// microvm's agent runs under busybox init (respawn in its inittab).
	if out := run(t, sshTo(t, ns, p), "cat /proc/1/comm; tail -2 /etc/inittab"); !strings.Contains(out, "::respawn:/run/microvm/init agent") {
		t.Errorf("the agent is not a service of busybox init:\n%s", out)
	}
	stop(t, r)
}
