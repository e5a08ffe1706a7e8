// Package plan compares the desired fleet (a validated config) with what the
// host has (the VMs the daemon knows, or the state directory's run records)
// and lists, VM by VM, what apply does: create, start, restart with a new
// spec, remove, define (not started: autostart is off) or leave alone, with
// the host steps of each. The daemon's apply executes this plan, so
// `microvm plan` shows exactly what apply will do.
package plan

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strings"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/state"
)

// Action is what happens to one VM.
type Action string

// The actions of a plan.
const (
	Create    Action = "create" // new, and started (autostart)
	Start     Action = "start"  // known but not running, and started (autostart)
	Update    Action = "update" // restart with the new spec
	Remove    Action = "remove" // stop and remove networking; volumes are kept
	Define    Action = "define" // new, networking made, not started (autostart: false)
	Unchanged Action = "unchanged"
)

// Past is how an apply reports having done a: created, started, restarted,
// removed, defined, unchanged.
func (a Action) Past() string {
	switch a {
	case Update:
		return "restarted"
	case Unchanged:
		return "unchanged"
	}
	return strings.TrimSuffix(string(a), "e") + "ed"
}

// Starts says whether the action boots the VM.
func (a Action) Starts() bool { return a == Create || a == Start || a == Update }

// Observed is what the host has of one VM: the spec it was last started
// with, and whether its hypervisor runs (or is starting).
type Observed struct {
	Name    string
	Spec    *config.VM
	Running bool
	// Saved says it was stopped by saving its state: it is started (and
	// resumed) whatever its autostart, as it was running.
	Saved bool
}

// FromRecords is the host's state as the state directory records it: every
// run record is a known VM, running when alive says its recorded process
// still runs.
func FromRecords(recs []state.RunRecord, alive func(state.RunRecord) bool) []Observed {
	out := make([]Observed, 0, len(recs))
	for i := range recs {
		out = append(out, Observed{Name: recs[i].Name, Spec: &recs[i].Spec, Running: recs[i].PID != 0 && alive(recs[i]), Saved: recs[i].PID == 0 && recs[i].Saved})
	}
	return out
}

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

// Plan is the whole plan, removals first, then updates, then creations and
// starts, then the VMs defined or left alone; by name within each.
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
		if v.Action != Unchanged && v.Action != Define {
			return false
		}
	}
	return true
}

// Compute plans the way from the observed VMs to the desired config: a
// running VM whose spec changed is restarted (whatever its autostart), a
// VM not running is started when autostart is on, a known VM no longer in
// the file is removed.
func Compute(desired *config.Config, observed []Observed) *Plan {
	known := make(map[string]Observed, len(observed))
	for _, o := range observed {
		known[o.Name] = o
	}
	p := &Plan{}
	for _, vm := range desired.VMs {
		o, ok := known[vm.Name]
		v := VMPlan{Name: vm.Name, Desired: vm}
		switch {
		case o.Running && o.Spec.SpecHash() == vm.SpecHash():
			v.Action = Unchanged
		case o.Running:
			v.Action, v.Changes, v.Steps = Update, Diff(o.Spec, vm), updateSteps(o.Spec, vm)
		case ok && o.Saved:
			v.Action, v.Steps = Start, append(volumeSteps(nil, vm), Step{"resume", startDetail(vm) + ", from its saved state if nothing it ran on changed"})
		case !vm.Supervision.Autostart && ok:
			v.Action = Unchanged
		case !vm.Supervision.Autostart:
			v.Action, v.Steps = Define, networkSteps(vm)
		case ok:
			v.Action, v.Steps = Start, append(volumeSteps(nil, vm), Step{"start", startDetail(vm)})
		default:
			v.Action, v.Steps = Create, createSteps(vm)
		}
		p.VMs = append(p.VMs, v)
	}
	for _, o := range observed {
		if desired.VM(o.Name) == nil {
			p.VMs = append(p.VMs, VMPlan{Name: o.Name, Action: Remove, Steps: removeSteps(o.Spec, o.Running)})
		}
	}
	order := map[Action]int{Remove: 0, Update: 1, Create: 2, Start: 2, Define: 3, Unchanged: 3}
	sort.SliceStable(p.VMs, func(i, j int) bool {
		a, b := p.VMs[i], p.VMs[j]
		if order[a.Action] != order[b.Action] {
			return order[a.Action] < order[b.Action]
		}
		return a.Name < b.Name
	})
	return p
}

func networkSteps(vm *config.VM) []Step {
	return []Step{
		{"create-bridge", fmt.Sprintf("%s %s/%d", vm.Net.Bridge, vm.Net.Gateway, vm.Net.Subnet.Bits())},
		{"create-tap", fmt.Sprintf("%s on %s", vm.Net.TAP, vm.Net.Bridge)},
	}
}

// volumeSteps are the volume steps from old's volumes (nil: none) to vm's.
func volumeSteps(old, vm *config.VM) []Step {
	var steps []Step
	oldVols := map[string]config.Volume{}
	if old != nil {
		for _, v := range old.Volumes {
			oldVols[v.Name] = v
		}
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
	for _, gone := range slices.Sorted(maps.Keys(oldVols)) {
		steps = append(steps, Step{"detach-volume", fmt.Sprintf("%s (kept on disk)", gone)})
	}
	return steps
}

func createSteps(vm *config.VM) []Step {
	steps := append(networkSteps(vm), volumeSteps(nil, vm)...)
	return append(steps, Step{"start", startDetail(vm)})
}

func updateSteps(old, vm *config.VM) []Step {
	steps := []Step{{"stop", fmt.Sprintf("%s (graceful shutdown)", old.Name)}}
	if old.Net != vm.Net {
		steps = append(steps, Step{"reconfigure-network", fmt.Sprintf("%s %s/%d, %s", vm.Net.Bridge, vm.Net.Gateway, vm.Net.Subnet.Bits(), vm.Net.TAP)})
	}
	steps = append(steps, volumeSteps(old, vm)...)
	return append(steps, Step{"start", startDetail(vm)})
}

func removeSteps(old *config.VM, running bool) []Step {
	var steps []Step
	if running {
		steps = append(steps, Step{"stop", fmt.Sprintf("%s (graceful shutdown)", old.Name)})
	}
	steps = append(steps, Step{"delete-tap", old.Net.TAP}, Step{"delete-bridge", old.Net.Bridge})
	for _, vol := range old.Volumes {
		steps = append(steps, Step{"keep-volume", fmt.Sprintf("%s (remove with microvm rm --purge)", vol.Name)})
	}
	return steps
}

func startDetail(vm *config.VM) string {
	return fmt.Sprintf("%s on %s: %d vCPU, %s, image %s, kernel %s", vm.Name, vm.Hypervisor, vm.VCPU, vm.Memory, vm.Image, vm.Kernel)
}

// Diff lists the top-level fields of two VMs that differ, by their JSON
// names, among those whose change restarts a VM (config.VM.RestartSpec).
func Diff(old, cur *config.VM) []Change {
	var out []Change
	ov, cv := reflect.ValueOf(old.RestartSpec()), reflect.ValueOf(cur.RestartSpec())
	t := ov.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
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
