package state

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/testutil"
)

func TestWriteFileReplacesAtomically(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "sub", "state.json")
	if err := WriteFile(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil || string(b) != "two" {
		t.Fatalf("content = %q, %v", b, err)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v", fi.Mode())
	}
	entries, _ := os.ReadDir(filepath.Dir(p))
	if len(entries) != 1 {
		t.Errorf("temp files left behind: %v", entries)
	}
}

func TestWriteFileFailureKeepsOld(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	if err := WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A directory where the temp file would go cannot be written: make the
	// target a directory so the rename fails after the temp file is written.
	q := filepath.Join(dir, "adir")
	os.MkdirAll(filepath.Join(q, "x"), 0o755)
	if err := WriteFile(q, []byte("new"), 0o644); err == nil {
		t.Fatal("rename over a non-empty directory should fail")
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temp file left after failure: %s", e.Name())
		}
	}
	if b, _ := os.ReadFile(p); string(b) != "old" {
		t.Errorf("unrelated file changed: %q", b)
	}
}

func TestRunRecords(t *testing.T) {
	d := Dir{Root: t.TempDir()}
	if recs, err := d.RunRecords(); err != nil || recs != nil {
		t.Fatalf("empty state: %v, %v", recs, err)
	}
	cfg, err := config.Parse("t.yaml", []byte("vms: { b: { index: 2 }, a: { index: 1 } }"), config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, vm := range cfg.VMs {
		if err := d.WriteRunRecord(RunRecord{Name: vm.Name, Spec: *vm, PID: 42}); err != nil {
			t.Fatal(err)
		}
	}
	// A VM directory with only a volume has no record and is skipped.
	os.MkdirAll(d.VMDir("c"), 0o755)
	recs, err := d.RunRecords()
	if err != nil || len(recs) != 2 || recs[0].Name != "a" || recs[1].Name != "b" {
		t.Fatalf("records = %+v, %v", recs, err)
	}
	if recs[0].SpecHash != cfg.VM("a").SpecHash() {
		t.Error("spec hash not recorded")
	}
	if recs[0].Spec.Net != cfg.VM("a").Net {
		t.Errorf("spec did not round-trip: %+v", recs[0].Spec.Net)
	}
}

func TestCorruptRunRecordIsAnError(t *testing.T) {
	d := Dir{Root: t.TempDir()}
	os.MkdirAll(d.VMDir("a"), 0o755)
	os.WriteFile(d.RunRecordPath("a"), []byte(`{"name": "a", "spec": {`), 0o644)
	_, err := d.RunRecords()
	if err == nil || !strings.Contains(err.Error(), "run.json is corrupt") {
		t.Fatalf("want a corrupt-state error naming the file, got %v", err)
	}
}

// TestWriteInterruptedByKill kills a process in the middle of rewriting a
// state file, at seeded random moments: the file is always a whole old or
// whole new version, never a mix, a truncation or empty.
func TestWriteInterruptedByKill(t *testing.T) {
	if os.Getenv("MICROVM_STATE_WRITER") != "" {
		writerLoop(os.Getenv("MICROVM_STATE_WRITER"))
		return
	}
	path := filepath.Join(t.TempDir(), "record.json")
	if err := WriteJSON(path, version(0)); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(42, 7))
	const trials = 20
	bad := 0
	for i := range trials {
		cmd := exec.Command(os.Args[0], "-test.run=^TestWriteInterruptedByKill$")
		cmd.Env = append(os.Environ(), "MICROVM_STATE_WRITER="+path)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(5+rng.IntN(40)) * time.Millisecond)
		cmd.Process.Kill()
		cmd.Wait()
		var v map[string]any
		b, err := os.ReadFile(path)
		if err != nil || json.Unmarshal(b, &v) != nil || len(v["pad"].(string)) != 1<<16 {
			bad++
			t.Errorf("trial %d: the file is damaged after a kill (%d bytes): %v", i, len(b), err)
		}
	}
	testutil.Report(t, testutil.FaultResult{Fault: "kill -9 while a state file is rewritten (temp, fsync, rename, directory fsync)", Trials: trials,
		LostBytes: int64(bad), Result: fmt.Sprintf("%d damaged files", bad)})
}

func version(n int) map[string]any {
	return map[string]any{"version": n, "pad": strings.Repeat(strconv.Itoa(n%10), 1<<16)}
}

// writerLoop rewrites path forever with growing versions (the child).
func writerLoop(path string) {
	for n := 1; ; n++ {
		WriteJSON(path, version(n))
	}
}
