package deploy

import (
	"strings"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/state"
)

// bootedImages are the digests the VMs of cfg booted from a registry
// (repo@sha256:…), as their run records say: what a generation records.
func bootedImages(cfg *config.Config, recs map[string]state.RunRecord) map[string]string {
	out := map[string]string{}
	for _, vm := range cfg.VMs {
		if r, ok := recs[vm.Name]; ok && config.IsReference(vm.Image) && strings.Contains(r.Image, "@sha256:") {
			out[vm.Name] = r.Image
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// pinImages says which VMs of cfg are to boot the digests a generation
// recorded instead of whatever their tags name now: a VM named by a tag
// gets its recorded digest reference, unless it runs that digest already
// with the same spec (it stays as it is, not restarted for the spelling).
func pinImages(cfg *config.Config, images map[string]string, recs map[string]state.RunRecord) map[string]string {
	pins := map[string]string{}
	for _, vm := range cfg.VMs {
		want := images[vm.Name]
		if want == "" || !config.IsReference(vm.Image) || strings.Contains(vm.Image, "@") {
			continue
		}
		if r, ok := recs[vm.Name]; ok && r.Image == want && r.SpecHash == vm.SpecHash() {
			continue
		}
		pins[vm.Name] = want
	}
	return pins
}
