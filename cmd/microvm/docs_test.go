package main

import (
	"testing"

	"microvm.dev/microvm/internal/confine"
	"microvm.dev/microvm/internal/testutil"
)

// Every microvm command line README.md and docs/ show names verbs that
// exist, and flags those verbs (or the global ones) take: a renamed verb
// or flag fails here until the docs follow.
func TestDocsCommandLines(t *testing.T) {
	root := (&app{}).rootCommand()
	cmds := testutil.DocCommands(t, "../..", "microvm")
	if len(cmds) < 50 {
		t.Fatalf("found only %d command lines in the docs", len(cmds))
	}
	for _, c := range cmds {
		// confine is the launcher's wrapper, parsed before the verbs.
		testutil.CheckDocCommand(t, root, c, func(verb string) bool { return verb == confine.Command })
	}
}
