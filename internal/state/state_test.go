package state

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"microvm.dev/microvm/internal/config"
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
