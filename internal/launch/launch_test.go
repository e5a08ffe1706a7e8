package launch

import (
	"strings"
	"testing"

	"microvm.dev/microvm/internal/vmm"
)

func TestBackendLookup(t *testing.T) {
	for _, name := range []string{"qemu", "cloud-hypervisor", "firecracker"} {
		b, err := Backend(name)
		if err != nil || b.Name() != name {
			t.Errorf("Backend(%q) = %v, %v", name, b, err)
		}
	}
	if _, err := Backend("xen"); err == nil {
		t.Error("unknown backend accepted")
	}
}

func TestShareKind(t *testing.T) {
	fc, _ := Backend("firecracker")
	ch, _ := Backend("cloud-hypervisor")
	q, _ := Backend("qemu")
	cases := []struct {
		share string
		b     vmm.Backend
		want  string
		err   string
	}{
		{"", fc, vmm.ShareBlock, ""},
		{"auto", fc, vmm.ShareBlock, ""},
		{"9p", fc, "", "firecracker cannot share the store over 9p (it supports block)"},
		{"9p", ch, "", "cloud-hypervisor cannot share the store over 9p"},
		{"block", ch, vmm.ShareBlock, ""},
		{"9p", q, vmm.Share9p, ""},
		{"block", q, vmm.ShareBlock, ""},
		{"nfs", q, "", "unknown share type"},
	}
	for _, c := range cases {
		got, err := Env{Share: c.share}.ShareKind(c.b)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s/%s: err = %v, want %q", c.b.Name(), c.share, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s/%s = %q, %v; want %q", c.b.Name(), c.share, got, err, c.want)
		}
	}
	// auto: QEMU takes virtiofs exactly when a virtiofsd is installed.
	want := vmm.Share9p
	if Virtiofsd() != "" {
		want = vmm.ShareVirtiofs
	}
	if got, _ := (Env{}).ShareKind(q); got != want {
		t.Errorf("qemu auto = %s, want %s", got, want)
	}
}
