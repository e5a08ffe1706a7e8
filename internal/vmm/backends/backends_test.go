package backends

import (
	"slices"
	"testing"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/vmm"
)

// The registry serves exactly the names config accepts, in its order, and
// every backend says where its control socket is and how to install it.
func TestRegistryMatchesConfig(t *testing.T) {
	var names []string
	for _, b := range All() {
		names = append(names, b.Name())
		c := b.Capabilities()
		if c.ControlSocket == "" || c.Install == "" || len(c.Shares) == 0 {
			t.Errorf("%s: incomplete capabilities %+v", b.Name(), c)
		}
		// A backend saves exactly when it says with which shares it can.
		if _, saver := b.(vmm.Saver); saver != (len(c.SaveShares) > 0) {
			t.Errorf("%s: implements vmm.Saver %v, but SaveShares %v", b.Name(), saver, c.SaveShares)
		}
		for _, s := range c.SaveShares {
			if !slices.Contains(c.Shares, s) {
				t.Errorf("%s: saves with share %s it does not offer", b.Name(), s)
			}
		}
		// Every VM has a balloon device; every backend can inflate it.
		if _, ok := b.(vmm.Ballooner); !ok {
			t.Errorf("%s does not implement vmm.Ballooner", b.Name())
		}
		if got, err := Get(b.Name()); err != nil || got.Name() != b.Name() {
			t.Errorf("Get(%q) = %v, %v", b.Name(), got, err)
		}
	}
	if !slices.Equal(names, config.Hypervisors()) {
		t.Errorf("registry %v, config %v", names, config.Hypervisors())
	}
	if b, err := Get(""); err != nil || b.Name() != config.DefaultHypervisor {
		t.Errorf("default: %v %v", b, err)
	}
	if _, err := Get("xen"); err == nil {
		t.Error("an unknown name was accepted")
	}
}
