package guest

import (
	"os"
	"path/filepath"
	"testing"
)

// TestResolveInToCreate: a path to be created inside an image's root
// follows the image's links as they resolve inside it (merged /usr's
// relative /lib link, an absolute link), never above it, and keeps the
// part that does not exist yet as it is.
func TestResolveInToCreate(t *testing.T) {
	tree := t.TempDir()
	os.MkdirAll(filepath.Join(tree, "usr/lib/modules/other"), 0o755)
	os.Symlink("usr/lib", filepath.Join(tree, "lib"))
	os.MkdirAll(filepath.Join(tree, "opt"), 0o755)
	os.Symlink("/usr/lib", filepath.Join(tree, "opt/abs"))
	os.Symlink("../../../../..", filepath.Join(tree, "opt/up"))
	for _, c := range []struct{ in, want string }{
		{"/lib/modules/6.1.0-57-amd64", "usr/lib/modules/6.1.0-57-amd64"},
		{"/opt/abs/modules/x", "usr/lib/modules/x"},
		{"/opt/up/etc/x", "etc/x"},
		{"/srv/new/dir", "srv/new/dir"},
	} {
		got, err := ResolveInToCreate(tree, c.in)
		if want := filepath.Join(tree, c.want); err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", c.in, got, err, want)
		}
	}
	if _, err := ResolveIn(tree, "/lib/modules/6.1.0-57-amd64"); err == nil {
		t.Error("ResolveIn of a path that does not exist did not fail")
	}
}
