package deploy

import (
	"testing"

	"microvm.dev/microvm/internal/generation"
	"microvm.dev/microvm/internal/gitsync"
)

func TestSkip(t *testing.T) {
	gen := func(n int, hash string, st generation.Status, manual bool) *generation.Generation {
		return &generation.Generation{Number: n, Commit: gitsync.Commit{Hash: hash}, Status: st, Manual: manual}
	}
	gens := []*generation.Generation{
		gen(1, "A", generation.Succeeded, false),
		gen(2, "B", generation.Succeeded, false),
		gen(3, "C", generation.RolledBack, false),
		gen(4, "D", generation.Failed, false),
	}
	for head, want := range map[string]bool{
		"D": true,  // what was just tried
		"C": true,  // rolled back: would fail again
		"A": false, // force-pushed back to an older good commit
		"E": false, // new
	} {
		if got := skip(gens, head); got != want {
			t.Errorf("head %s: skip = %v, want %v", head, got, want)
		}
	}
	// After a rollback by hand from B to A, B is left alone; A runs.
	manual := append(gens, gen(5, "A", generation.Succeeded, true))
	if !skip(manual, "B") || !skip(manual, "A") || skip(manual, "E") {
		t.Errorf("after a manual rollback: B %v, A %v, E %v", skip(manual, "B"), skip(manual, "A"), skip(manual, "E"))
	}
}
