package e2e

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestImageInit hands PID 1 to the image's own init (init: image): the
// busybox base image's init takes over the console, the network set up
// before the hand-over answers, and the VM still stops on request.
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
	if !strings.Contains(console, "init=/sbin/init") || !strings.Contains(console, "activate this console") {
		t.Fatalf("busybox init did not take over the console:\n%s", console)
	}
	if !ns.Ping(t, "10.1.0.2") {
		t.Error("the VM's network, configured before the hand-over, does not answer")
	}
	stop(t, r)
}
