package pincache

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const sumA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A file kept is linked at a new place by its digest, and its digest is
// known through any of its links, after a restart too; an unknown digest
// links nothing; a bad one is refused.
func TestKeepLinkSum(t *testing.T) {
	dir := t.TempDir()
	c := New(filepath.Join(dir, "cache"))
	got := filepath.Join(dir, "pin.store")
	write(t, got, "the store image")
	if err := c.Keep(got, sumA); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "vm2", "pin.store")
	os.MkdirAll(filepath.Dir(dst), 0o755)
	if ok, err := c.Link(sumA, dst); !ok || err != nil {
		t.Fatalf("Link of a kept digest: %v, %v", ok, err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "the store image" {
		t.Errorf("linked %q", b)
	}
	if sum, ok := c.Sum(dst); !ok || sum != sumA {
		t.Errorf("Sum of a link: %q, %v", sum, ok)
	}
	restarted := New(filepath.Join(dir, "cache"))
	if sum, ok := restarted.Sum(got); !ok || sum != sumA {
		t.Errorf("Sum after a restart: %q, %v", sum, ok)
	}
	if ok, err := c.Link(strings.Repeat("b", 64), filepath.Join(dir, "other")); ok || err != nil {
		t.Errorf("Link of an unknown digest: %v, %v", ok, err)
	}
	if _, err := c.Link("../../etc/passwd", filepath.Join(dir, "x")); err == nil {
		t.Error("a digest that is a path was taken")
	}
	if err := c.Keep(got, "nope"); err == nil {
		t.Error("a bad digest was kept")
	}
}

// A file sent is known by its digest until it changes.
func TestNoteForgetsChangedFiles(t *testing.T) {
	dir := t.TempDir()
	c := New(filepath.Join(dir, "cache"))
	path := filepath.Join(dir, "modules.ext4")
	write(t, path, "modules")
	c.Note(path, sumA)
	if sum, ok := c.Sum(path); !ok || sum != sumA {
		t.Fatalf("Sum of a noted file: %q, %v", sum, ok)
	}
	os.Chtimes(path, time.Now().Add(time.Hour), time.Now().Add(time.Hour))
	write(t, path, "other modules")
	if sum, ok := c.Sum(path); ok {
		t.Errorf("Sum of a changed file: %q", sum)
	}
}

// Prune drops only files that no VM links and that were last linked or
// unlinked longer ago than it is given.
func TestPrune(t *testing.T) {
	dir := t.TempDir()
	c := New(filepath.Join(dir, "cache"))
	used := filepath.Join(dir, "used")
	write(t, used, "used")
	c.Keep(used, sumA)
	unused := filepath.Join(dir, "unused")
	write(t, unused, "unused")
	sumB := strings.Repeat("b", 64)
	c.Keep(unused, sumB)
	os.Remove(unused)
	if err := c.Prune(time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "cache", sumB)); err != nil {
		t.Error("a file unlinked just now was pruned")
	}
	if err := c.Prune(0); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "cache", sumB)); err == nil {
		t.Error("a file no VM links was kept")
	}
	if _, err := os.Stat(filepath.Join(dir, "cache", sumA)); err != nil {
		t.Error("a file a VM links was pruned")
	}
}
