package store

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestParallelUnpackMatchesInOrder unpacks layers that remove, replace and
// link what earlier entries wrote (while those may still be queued on a
// worker) with one worker and with four, and requires the same tree.
func TestParallelUnpackMatchesInOrder(t *testing.T) {
	var first []entry
	for d := range 6 {
		first = append(first, entry{name: fmt.Sprintf("d%d/", d), typ: tar.TypeDir, mode: 0o750})
		for f := range 20 {
			first = append(first, entry{name: fmt.Sprintf("d%d/f%02d", d, f), body: fmt.Sprintf("layer1 %d %d", d, f)})
		}
	}
	first = append(first,
		entry{name: "d0/twice", body: "first"},
		entry{name: "d0/twice", body: "second"}, // the same path again in one layer
		entry{name: "d1/hard", typ: tar.TypeLink, link: "d1/f03"},
		entry{name: "big", body: strings.Repeat("b", bufferedFile+1)}, // written in order, not queued
		entry{name: "d2/f00", typ: tar.TypeDir},                       // a queued file replaced by a directory
		entry{name: "d2/f00/inside", body: "in"},
	)
	second := []entry{
		{name: "d0/.wh.f01"}, // whiteout of a lower file
		{name: "d0/f02", typ: tar.TypeSymlink, link: "f03"}, // a file replaced by a symlink
		{name: "d1/f04", body: "layer2", mode: 0o4755},      // a file replaced by a file
		{name: "d3/.wh..wh..opq"},                           // opaque: lower entries go
		{name: "d3/kept", body: "mine"},                     // …but not this layer's own
		{name: "d4/f05/", typ: tar.TypeDir},                 // a lower file replaced by a directory
		{name: "d5/sub/deep/file", body: "parents made on the way"},
		{name: "d5/link", typ: tar.TypeLink, link: "d5/sub/deep/file"},
	}
	third := []entry{
		{name: "d0/f02", body: "a file again"},
		{name: "d1/.wh.hard"},
	}
	layers := [][]byte{layerTar(t, first...), layerTar(t, second...), layerTar(t, third...)}
	unpack := func(workers int) string {
		root := t.TempDir()
		u := newUnpacker(root, workers)
		for i, l := range layers {
			if err := u.layer(bytes.NewReader(l)); err != nil {
				t.Fatalf("workers %d, layer %d: %v", workers, i+1, err)
			}
		}
		if err := u.close(); err != nil {
			t.Fatal(err)
		}
		return describe(t, root)
	}
	inOrder, parallel := unpack(1), unpack(4)
	if inOrder != parallel {
		t.Errorf("four workers made a different tree:\n--- one worker\n%s\n--- four workers\n%s", inOrder, parallel)
	}
	for _, want := range []string{"d0/twice -rw-r--r-- second", "d0/f02 -rw-r--r-- a file again", "d1/f04 urwxr-xr-x layer2", "d3/kept", "d2/f00/inside", "d5/link -rw-r--r-- parents made"} {
		if !strings.Contains(parallel, want) {
			t.Errorf("tree lacks %q:\n%s", want, parallel)
		}
	}
	for _, gone := range []string{"d0/f01 ", "d3/f00 ", "d1/hard "} {
		if strings.Contains(parallel, gone) {
			t.Errorf("tree still has %q", gone)
		}
	}
}

// describe lists a tree: path, mode, and content or link target.
func describe(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %s", rel, fi.Mode())
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			fmt.Fprintf(&b, " -> %s", l)
		case fi.Mode().IsRegular():
			data, _ := os.ReadFile(p)
			fmt.Fprintf(&b, " %.40s", data)
		}
		b.WriteString("\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}
