package deploy

import (
	"maps"
	"testing"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/state"
)

// A rollback pins a VM named by a tag to the digest its generation ran,
// unless the VM runs that digest with the same spec already; store names
// and digest references are left as written.
func TestPinImages(t *testing.T) {
	const d1, d2 = "r.example/app@sha256:1111", "r.example/app@sha256:2222"
	vm := func(name, image string) *config.VM { return &config.VM{Name: name, Image: image} }
	cfg := &config.Config{VMs: []*config.VM{
		vm("moved", "r.example/app:1"),  // its tag moved on: pinned
		vm("same", "r.example/app:1"),   // runs d1 with this very spec: left alone
		vm("respec", "r.example/app:1"), // runs d1, but its spec differs (it restarts): pinned
		vm("local", "base"),             // a store name: left alone
		vm("digest", "r.example/app@sha256:3333"),
		vm("new", "r.example/app:1"), // not running: pinned
	}}
	same := *cfg.VMs[1]
	recs := map[string]state.RunRecord{
		"moved":  {Image: d2, SpecHash: cfg.VMs[0].SpecHash()},
		"same":   {Image: d1, SpecHash: same.SpecHash()},
		"respec": {Image: d1, SpecHash: "another"},
	}
	images := map[string]string{"moved": d1, "same": d1, "respec": d1, "local": d1, "digest": d1, "new": d1}
	pins := pinImages(cfg, images, recs)
	if want := map[string]string{"moved": d1, "respec": d1, "new": d1}; !maps.Equal(pins, want) {
		t.Errorf("pins %v, want %v", pins, want)
	}
	// What a generation records: registry images' digests only.
	got := bootedImages(cfg, map[string]state.RunRecord{"same": {Image: d1}, "local": {Image: "dir:/srv/base"}})
	if len(got) != 1 || got["same"] != d1 {
		t.Errorf("bootedImages = %v, want same's digest only", got)
	}
}
