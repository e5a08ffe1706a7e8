// Package plan compares the desired fleet (a validated config) with what the
// state directory records as running and lists, VM by VM, what apply must do:
// create, restart with a new spec, remove, or leave alone, as ordered steps.
package plan

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/state"
)

// Action is what happens to one VM.
type Action string

// The actions of a plan.
const (
	Create    Action = "create"
	Update    Action = "update" // restart with the new spec
	Remove    Action = "remove" // stop and remove networking; volumes are kept
	Unchanged Action = "unchanged"
)

// Change is one field of a VM whose value differs between running and desired.
type Change struct {
	Field string `json:"field"`
	From  string `json:"from"`
	To    string `json:"to"`
}

// Step is one host operation of a VM's plan.
type Step struct {
	// Op names the operation (e.g. "create-bridge", "start").
	Op string `json:"op"`
	// Detail says what it acts on.
	Detail string `json:"detail"`
}

// VMPlan is the plan of one VM.
type VMPlan struct {
	Name    string     `json:"name"`
	Action  Action     `json:"action"`
	Changes []Change   `json:"changes,omitempty"`
	Steps   []Step     `json:"steps,omitempty"`
	Desired *config.VM `json:"desired,omitempty"`
}

// Plan is the whole plan, removals first, then updates, then creations, then
// the VMs left alone; by name within each.
type Plan struct {
	VMs []VMPlan `json:"vms"`
}

// Counts returns how many VMs get each action.
func (p *Plan) Counts() map[Action]int {
	m := map[Action]int{}
	for _, v := range p.VMs {
		m[v.Action]++
	}
	return m
}

// Empty reports whether applying the plan would change nothing.
func (p *Plan) Empty() bool {
	for _, v := range p.VMs {
		if v.Action != Unchanged {
			return false
		}
	}
	return true
}

// Compute plans the way from the observed run records to the desired config.
func Compute(desired *config.Config, observed []state.RunRecord) *Plan {
	running := make(map[string]*state.RunRecord, len(observed))
	for i := range observed {
		running[observed[i].Name] = &observed[i]
	}
	p := &Plan{}
	for _, vm := range desired.VMs {
		rec, ok := running[vm.Name]
		switch {
		case !ok:
			p.VMs = append(p.VMs, VMPlan{Name: vm.Name, Action: Create, Desired: vm, Steps: createSteps(vm)})
		case rec.SpecHash == vm.SpecHash():
			p.VMs = append(p.VMs, VMPlan{Name: vm.Name, Action: Unchanged, Desired: vm})
		default:
			changes := Diff(&rec.Spec, vm)
			p.VMs = append(p.VMs, VMPlan{Name: vm.Name, Action: Update, Desired: vm, Changes: changes, Steps: updateSteps(&rec.Spec, vm)})
		}
	}
	for _, rec := range observed {
		if desired.VM(rec.Name) == nil {
			p.VMs = append(p.VMs, VMPlan{Name: rec.Name, Action: Remove, Steps: removeSteps(&rec.Spec)})
		}
	}
	order := map[Action]int{Remove: 0, Update: 1, Create: 2, Unchanged: 3}
	sort.SliceStable(p.VMs, func(i, j int) bool {
		a, b := p.VMs[i], p.VMs[j]
		if order[a.Action] != order[b.Action] {
			return order[a.Action] < order[b.Action]
		}
		return a.Name < b.Name
	})
	return p
}

func createSteps(vm *config.VM) []Step {
	steps := []Step{
		{"create-bridge", fmt.Sprintf("%s %s/%d", vm.Net.Bridge, vm.Net.Gateway, vm.Net.Subnet.Bits())},
		{"create-tap", fmt.Sprintf("%s on %s", vm.Net.TAP, vm.Net.Bridge)},
	}
	for _, vol := range vm.Volumes {
		steps = append(steps, Step{"ensure-volume", fmt.Sprintf("%s %s at %s (created and formatted if missing)", vol.Name, vol.Size, vol.MountPoint)})
	}
	return append(steps, Step{"start", startDetail(vm)})
}

func updateSteps(old, vm *config.VM) []Step {
	var steps []Step
	steps = append(steps, Step{"stop", fmt.Sprintf("%s (graceful shutdown)", old.Name)})
	if old.Net != vm.Net {
		steps = append(steps, Step{"reconfigure-network", fmt.Sprintf("%s %s/%d, %s", vm.Net.Bridge, vm.Net.Gateway, vm.Net.Subnet.Bits(), vm.Net.TAP)})
	}
	oldVols := map[string]config.Volume{}
	for _, v := range old.Volumes {
		oldVols[v.Name] = v
	}
	for _, vol := range vm.Volumes {
		prev, had := oldVols[vol.Name]
		switch {
		case !had:
			steps = append(steps, Step{"ensure-volume", fmt.Sprintf("%s %s at %s (created and formatted if missing)", vol.Name, vol.Size, vol.MountPoint)})
		case vol.Size > prev.Size:
			steps = append(steps, Step{"grow-volume", fmt.Sprintf("%s %s → %s", vol.Name, prev.Size, vol.Size)})
		}
		delete(oldVols, vol.Name)
	}
	for _, gone := range sortedKeys(oldVols) {
		steps = append(steps, Step{"detach-volume", fmt.Sprintf("%s (kept on disk)", gone)})
	}
	return append(steps, Step{"start", startDetail(vm)})
}

func removeSteps(old *config.VM) []Step {
	steps := []Step{
		{"stop", fmt.Sprintf("%s (graceful shutdown)", old.Name)},
		{"delete-tap", old.Net.TAP},
		{"delete-bridge", old.Net.Bridge},
	}
	for _, vol := range old.Volumes {
		steps = append(steps, Step{"keep-volume", fmt.Sprintf("%s (remove with microvm rm --purge)", vol.Name)})
	}
	return steps
}

func startDetail(vm *config.VM) string {
	return fmt.Sprintf("%s on %s: %d vCPU, %s, image %s, kernel %s", vm.Name, vm.Hypervisor, vm.VCPU, vm.Memory, vm.Image, vm.Kernel)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Diff lists the top-level fields of two VMs that differ, by their JSON names.
func Diff(old, cur *config.VM) []Change {
	var out []Change
	ov, cv := reflect.ValueOf(*old), reflect.ValueOf(*cur)
	t := ov.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" || name == "supervision" {
			continue // supervision changes need no restart
		}
		a, b := show(ov.Field(i).Interface()), show(cv.Field(i).Interface())
		if a != b {
			out = append(out, Change{Field: name, From: a, To: b})
		}
	}
	return out
}

// show renders a field value compactly: Stringers as themselves, the rest as JSON.
func show(v any) string {
	if s, ok := v.(fmt.Stringer); ok {
		return s.String()
	}
	if s, ok := v.(string); ok {
		return s
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
