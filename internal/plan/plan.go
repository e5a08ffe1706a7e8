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
	"reflect"
	"slices"
	"sort"
	"strings"

	"microvm.dev/microvm/internal/apitypes"
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

// Op is one kind of host operation a plan lists and an apply reports
// having done (apitypes.VMAction.Done).
type Op string

// The host operations of a plan.
const (
	OpStop               Op = "stop"                // shut the running VM down
	OpCreateBridge       Op = "create-bridge"       // its bridge, with the gateway address
	OpCreateTAP          Op = "create-tap"          // its TAP, on the bridge
	OpReconfigureNetwork Op = "reconfigure-network" // its bridge's addresses or its TAP changed
	OpDeleteTAP          Op = "delete-tap"
	OpDeleteBridge       Op = "delete-bridge"
	OpEnsureVolume       Op = "ensure-volume" // created and formatted if missing
	OpGrowVolume         Op = "grow-volume"
	OpDetachVolume       Op = "detach-volume" // no longer attached, kept on disk
	OpKeepVolume         Op = "keep-volume"   // a removed VM's volume, kept on disk
	OpStart              Op = "start"         // boot
	OpResume             Op = "resume"        // from its saved state (a cold boot if it was dropped)
)

// Step is one host operation of a VM's plan.
type Step struct {
	// Op names the operation.
	Op Op `json:"op"`
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
	// TagMoved is set when the VM's image tag names another image in its
	// registry than the one the VM runs.
	TagMoved *TagMove `json:"tagMoved,omitempty"`
}

// TagMove is an image tag that moved since the VM booted it: the file
// names the same tag, the registry gives another digest.
type TagMove struct {
	// Image is the tag as the file writes it.
	Image string `json:"image"`
	// Running is the image the VM runs (repo@sha256:…), Now the one the
	// tag names in the registry.
	Running string `json:"running"`
	Now     string `json:"now"`
	// Boots says what the VM will boot from the next start on: the new
	// image (pullPolicy always), or the one in the store.
	Boots string `json:"boots"`
}

// MarkMovedTags records in p each VM whose image is a tag that now names
// another image than the one it runs (running: repo@sha256:… by VM, as
// its run record says). resolve asks the registry; a VM it cannot ask
// about is left unmarked and reported through warn.
func (p *Plan) MarkMovedTags(running map[string]string, resolve func(*config.VM) (string, error), warn func(vm string, err error)) {
	for i := range p.VMs {
		v := &p.VMs[i]
		was := running[v.Name]
		if v.Desired == nil || was == "" || !config.IsReference(v.Desired.Image) || strings.Contains(v.Desired.Image, "@") {
			continue
		}
		now, err := resolve(v.Desired)
		if err != nil {
			warn(v.Name, err)
			continue
		}
		if now == was {
			continue
		}
		m := &TagMove{Image: v.Desired.Image, Running: was, Now: now}
		switch v.Desired.Supervision.PullPolicy {
		case config.PullAlways:
			m.Boots = "the new image at its next start (pullPolicy always)"
		case config.PullNever:
			m.Boots = "the stored image (pullPolicy never)"
		default:
			m.Boots = "the stored image until `microvm image pull " + v.Desired.Image + "` (pullPolicy missing)"
		}
		v.TagMoved = m
	}
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

// Empty reports whether applying the plan would change nothing: no VM
// has a host step.
func (p *Plan) Empty() bool {
	for _, v := range p.VMs {
		if len(v.Steps) > 0 {
			return false
		}
	}
	return true
}

// Host is what a plan knows of the host beyond the VMs. The zero Host
// knows nothing more: every VM created or defined then needs its links
// made, a removed one its links deleted, an updated one whose network
// changed its network reconfigured, and every volume is missing.
type Host struct {
	// Links are the link changes the network reconcile would make for
	// the desired file (network.Manager.Plan, a dry run), when LinksKnown:
	// the plan's network steps are then these (LinkSteps).
	Links      []apitypes.LinkChange
	LinksKnown bool
	// Volume says the size on disk of a VM's volume (false: not there);
	// nil: none is.
	Volume func(vm, volume string) (config.Size, bool)
}

// volume is h.Volume, or nothing.
func (h Host) volume(vm, name string) (config.Size, bool) {
	if h.Volume == nil {
		return 0, false
	}
	return h.Volume(vm, name)
}

// Compute plans the way from the observed VMs to the desired config: a
// running VM whose spec changed is restarted (whatever its autostart), a
// VM not running is started when autostart is on, a known VM no longer in
// the file is removed. Each VM's host steps are what host says they are.
func Compute(desired *config.Config, observed []Observed, host Host) *Plan {
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
			v.Action, v.Changes = Update, Diff(o.Spec, vm)
		case ok && o.Saved:
			v.Action = Start
		case !vm.Supervision.Autostart && ok:
			v.Action = Unchanged
		case !vm.Supervision.Autostart:
			v.Action = Define
		case ok:
			v.Action = Start
		default:
			v.Action = Create
		}
		v.Steps = steps(v, o, host)
		p.VMs = append(p.VMs, v)
	}
	for _, o := range observed {
		if desired.VM(o.Name) == nil {
			v := VMPlan{Name: o.Name, Action: Remove}
			v.Steps = steps(v, o, host)
			p.VMs = append(p.VMs, v)
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

// steps are v's host steps, in the order an apply does them: the stop of
// a running VM, the network, the volumes, the boot (o is what the host
// had of the VM).
func steps(v VMPlan, o Observed, host Host) []Step {
	var out []Step
	if o.Running && (v.Action == Update || v.Action == Remove) {
		out = append(out, Step{OpStop, fmt.Sprintf("%s (graceful shutdown)", v.Name)})
	}
	if host.LinksKnown {
		out = append(out, LinkSteps(v.Action, v.Desired, o.Spec, host.Links)...)
	} else {
		out = append(out, assumedLinkSteps(v, o.Spec)...)
	}
	switch v.Action {
	case Remove:
		for _, vol := range o.Spec.Volumes {
			if _, there := host.volume(v.Name, vol.Name); there {
				out = append(out, Step{OpKeepVolume, fmt.Sprintf("%s (remove with microvm rm --purge)", vol.Name)})
			}
		}
	case Create, Start, Update:
		var old *config.VM
		if v.Action == Update {
			old = o.Spec
		}
		out = append(out, volumeSteps(old, v.Desired, host)...)
		if o.Saved {
			out = append(out, Step{OpResume, startDetail(v.Desired) + ", from its saved state if nothing it ran on changed"})
		} else {
			out = append(out, Step{OpStart, startDetail(v.Desired)})
		}
	}
	return out
}

// assumedLinkSteps are the network steps of v when the host's links are
// not known (the zero Host).
func assumedLinkSteps(v VMPlan, old *config.VM) []Step {
	switch {
	case v.Action == Create || v.Action == Define:
		return []Step{
			{OpCreateBridge, fmt.Sprintf("%s %s/%d", v.Desired.Net.Bridge, v.Desired.Net.Gateway, v.Desired.Net.Subnet.Bits())},
			{OpCreateTAP, fmt.Sprintf("%s on %s", v.Desired.Net.TAP, v.Desired.Net.Bridge)},
		}
	case v.Action == Remove:
		return []Step{{OpDeleteTAP, old.Net.TAP}, {OpDeleteBridge, old.Net.Bridge}}
	case v.Action == Update && old.Net != v.Desired.Net:
		return []Step{{OpReconfigureNetwork, reconfigured(v.Desired)}}
	}
	return nil
}

func reconfigured(vm *config.VM) string {
	return fmt.Sprintf("%s %s/%d, %s", vm.Net.Bridge, vm.Net.Gateway, vm.Net.Subnet.Bits(), vm.Net.TAP)
}

// linkOps are the plan's ops of a link created or deleted.
var linkOps = map[string]Op{"create-bridge": OpCreateBridge, "create-tuntap": OpCreateTAP, "delete-tuntap": OpDeleteTAP, "delete-bridge": OpDeleteBridge}

// LinkSteps are the network steps of one VM (its action, its desired and
// its known spec, either may be nil) among the link changes of a network
// reconcile (changes: the ones a dry run would make, or the ones an apply
// made). A VM created, defined or removed has its links created or
// deleted (the addresses, attachments and settings of a link made anew
// are part of making it); any change to the links of a VM that had them
// (a new address, a new index, a link deleted by hand and made again) is
// its network reconfigured.
func LinkSteps(action Action, desired, old *config.VM, changes []apitypes.LinkChange) []Step {
	mine := map[string]bool{}
	for _, vm := range []*config.VM{desired, old} {
		if vm != nil {
			mine[vm.Net.Bridge], mine[vm.Net.TAP] = true, true
		}
	}
	var whole, other []Step
	for _, c := range changes {
		name := LinkOf(c)
		if !mine[name] {
			continue
		}
		if op, ok := linkOps[c.Op]; ok {
			whole = append(whole, Step{op, name})
		} else {
			other = append(other, Step{Op(c.Op), c.Target})
		}
	}
	switch {
	case len(whole)+len(other) == 0:
		return nil
	case len(whole) > 0 && (action == Create || action == Define || action == Remove):
		return whole
	}
	vm := desired
	if vm == nil {
		vm = old
	}
	return []Step{{OpReconfigureNetwork, reconfigured(vm)}}
}

// LinkOf is the interface a link change acts on: its target's first word
// ("vm-a to br-a"), the interface after "on" ("10.1.0.1/24 on br-a"), or
// the interface of a per-interface setting
// ("net.ipv6.conf.br-a.disable_ipv6=1"; "" for a setting of the whole
// host).
func LinkOf(c apitypes.LinkChange) string {
	if c.Op == "set-sysctl" {
		parts := strings.Split(c.Target, ".")
		if len(parts) >= 5 && parts[2] == "conf" {
			return parts[3]
		}
		return ""
	}
	if _, on, ok := strings.Cut(c.Target, " on "); ok {
		return on
	}
	name, _, _ := strings.Cut(c.Target, " ")
	return name
}

// volumeSteps are the volume steps of vm, from old's volumes (nil: none):
// a volume not on disk is made, one smaller on disk grown, one of old's
// that vm no longer has detached (kept on disk).
func volumeSteps(old, vm *config.VM, host Host) []Step {
	var steps []Step
	for _, vol := range vm.Volumes {
		size, there := host.volume(vm.Name, vol.Name)
		switch {
		case !there:
			steps = append(steps, Step{OpEnsureVolume, fmt.Sprintf("%s %s at %s (created and formatted)", vol.Name, vol.Size, vol.MountPoint)})
		case size < vol.Size:
			steps = append(steps, Step{OpGrowVolume, fmt.Sprintf("%s %s → %s", vol.Name, size, vol.Size)})
		}
	}
	if old == nil {
		return steps
	}
	for _, gone := range old.Volumes {
		if slices.ContainsFunc(vm.Volumes, func(v config.Volume) bool { return v.Name == gone.Name }) {
			continue
		}
		if _, there := host.volume(vm.Name, gone.Name); there {
			steps = append(steps, Step{OpDetachVolume, fmt.Sprintf("%s (kept on disk)", gone.Name)})
		}
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
