package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// microvm-kubelet talks to the daemon through its API: it links the API
// client and the wire types, never the daemon, its supervisor, its API
// server, the GitOps loop or the host network's code.
func TestLinksNoDaemon(t *testing.T) {
	out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := map[string]bool{}
	for _, p := range strings.Fields(string(out)) {
		deps[p] = true
	}
	if !deps["microvm.dev/microvm/internal/api"] || !deps["microvm.dev/microvm/internal/apitypes"] {
		t.Fatalf("the API client is not among its dependencies: %s", out)
	}
	for _, p := range []string{"daemon", "supervisor", "apiserver", "deploy", "network", "firewall"} {
		if deps["microvm.dev/microvm/internal/"+p] {
			t.Errorf("microvm-kubelet links internal/%s", p)
		}
	}
}
