package generation

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"microvm.dev/microvm/internal/gitsync"
	"microvm.dev/microvm/internal/testutil"
)

func TestSaveListPrune(t *testing.T) {
	st := t.TempDir()
	s := Open(st, 3)
	statuses := []Status{Succeeded, Failed, RolledBack, Failed, Failed}
	for i, status := range statuses {
		g := &Generation{Number: i + 1, Commit: gitsync.Commit{Hash: strings.Repeat(string(rune('a'+i)), 40)}, Status: status, Config: "vms: {}\n"}
		if err := s.Save(g); err != nil {
			t.Fatal(err)
		}
	}
	gens, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	var nums []int
	for _, g := range gens {
		nums = append(nums, g.Number)
	}
	// The last 3 are retained, and the last good one (1) is never pruned.
	if len(nums) != 4 || nums[0] != 1 || nums[1] != 3 || nums[3] != 5 {
		t.Errorf("retained %v, want [1 3 4 5]", nums)
	}
	if LastGood(gens).Number != 1 || Latest(gens).Number != 5 || Next(gens) != 6 {
		t.Errorf("last good %d, latest %d, next %d", LastGood(gens).Number, Latest(gens).Number, Next(gens))
	}
	if _, err := s.Get(2); err == nil || !strings.Contains(err.Error(), "retained: 1, 3, 4, 5") {
		t.Errorf("Get(2) = %v", err)
	}
	if Next(nil) != 1 || LastGood(nil) != nil {
		t.Error("empty history")
	}
	// No temporary files are left by the atomic writes.
	entries, _ := os.ReadDir(filepath.Join(st, "generations"))
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

// A generation file damaged on disk is refused by name: the daemon never
// starts from invented state.
func TestCorruptGenerationIsAnError(t *testing.T) {
	st := t.TempDir()
	s := Open(st, 0)
	s.Save(&Generation{Number: 1, Status: Succeeded})
	os.WriteFile(filepath.Join(st, "generations", "2.json"), []byte(`{"number": 2, "status": "succ`), 0o600)
	if _, err := s.List(); err == nil || !strings.Contains(err.Error(), "generation 2") || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("err = %v", err)
	}
	os.WriteFile(filepath.Join(st, "generations", "2.json"), []byte(`{"number": 7}`), 0o600)
	if _, err := s.List(); err == nil {
		t.Error("a file whose number does not match its name was accepted")
	}
	testutil.Report(t, testutil.FaultResult{Fault: "a generation file truncated or renumbered on disk", Trials: 2, Result: "refused, naming the generation"})
}
