package main

import (
	"testing"

	"microvm.dev/microvm/internal/testutil"
)

// Every microvm-kubelet command line of README.md and docs/ takes flags
// it has.
func TestDocsCommandLines(t *testing.T) {
	cmds := testutil.DocCommands(t, "../..", "microvm-kubelet")
	if len(cmds) < 2 {
		t.Fatalf("found only %d microvm-kubelet command lines in the docs", len(cmds))
	}
	for _, c := range cmds {
		testutil.CheckDocCommand(t, command(), c, nil)
	}
}
