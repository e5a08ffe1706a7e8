package plan

import (
	"errors"
	"strings"
	"testing"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/state"
)

func parse(t *testing.T, src string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("t.yaml", []byte(src), config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// running records every VM of cfg as started with its current spec.
func running(cfg *config.Config) []Observed {
	var recs []state.RunRecord
	for _, vm := range cfg.VMs {
		recs = append(recs, state.RunRecord{Name: vm.Name, SpecHash: vm.SpecHash(), Spec: *vm, PID: 100})
	}
	return FromRecords(recs, func(state.RunRecord) bool { return true })
}

// onDisk is a Host's Volume from sizes by "vm/volume".
func onDisk(sizes map[string]config.Size) func(vm, name string) (config.Size, bool) {
	return func(vm, name string) (config.Size, bool) {
		s, ok := sizes[vm+"/"+name]
		return s, ok
	}
}

const before = `
defaults: { memory: 1G, volumes: [{ name: data, mountPoint: /mnt/storage, size: 8G }] }
vms:
  a: { index: 1 }
  b: { index: 2 }
  c: { index: 3 }
`

func TestNoStateCreatesEverything(t *testing.T) {
	p := Compute(parse(t, before), nil, Host{})
	if c := p.Counts(); c[Create] != 3 || len(p.VMs) != 3 {
		t.Fatalf("counts = %v", c)
	}
	steps := p.VMs[0].Steps
	if steps[0].Op != "create-bridge" || steps[0].Detail != "br-a 10.1.0.1/24" || steps[len(steps)-1].Op != "start" {
		t.Errorf("steps = %+v", steps)
	}
}

func TestSameSpecIsUnchanged(t *testing.T) {
	cfg := parse(t, before)
	p := Compute(cfg, running(cfg), Host{Volume: onDisk(map[string]config.Size{"a/data": 8 << 30, "b/data": 8 << 30, "c/data": 8 << 30}), LinksKnown: true})
	if !p.Empty() {
		t.Fatalf("plan against identical state is not empty: %+v", p)
	}
}

func TestChangeRemoveCreate(t *testing.T) {
	old := parse(t, before)
	cur := parse(t, `
defaults: { memory: 1G, volumes: [{ name: data, mountPoint: /mnt/storage, size: 8G }] }
vms:
  a: { index: 1, memory: 2G, volumes: [{ name: data, mountPoint: /mnt/storage, size: 16G }] }
  b: { index: 2 }
  d: { index: 4 }
`)
	p := Compute(cur, running(old), Host{Volume: onDisk(map[string]config.Size{"a/data": 8 << 30, "b/data": 8 << 30, "c/data": 8 << 30})})
	got := map[string]Action{}
	for _, v := range p.VMs {
		got[v.Name] = v.Action
	}
	want := map[string]Action{"a": Update, "b": Unchanged, "c": Remove, "d": Create}
	for name, act := range want {
		if got[name] != act {
			t.Errorf("%s: %s, want %s", name, got[name], act)
		}
	}
	if p.VMs[0].Name != "c" || p.VMs[1].Name != "a" || p.VMs[2].Name != "d" || p.VMs[3].Name != "b" {
		t.Errorf("order should be remove, update, create, unchanged: %v", p.VMs)
	}
	a := p.VMs[1]
	if len(a.Changes) != 2 || a.Changes[0] != (Change{"memory", "1G", "2G"}) || a.Changes[1].Field != "volumes" {
		t.Errorf("a's changes = %+v", a.Changes)
	}
	hasGrow := false
	for _, s := range a.Steps {
		if s.Op == "grow-volume" && s.Detail == "data 8G → 16G" {
			hasGrow = true
		}
	}
	if !hasGrow {
		t.Errorf("a's steps lack the volume growth: %+v", a.Steps)
	}
	for _, s := range p.VMs[0].Steps {
		if s.Op == "delete-volume" {
			t.Fatal("removing a VM must never delete its volume")
		}
	}
	if last := p.VMs[0].Steps[len(p.VMs[0].Steps)-1]; last.Op != "keep-volume" {
		t.Errorf("removal should say the volume is kept: %+v", p.VMs[0].Steps)
	}
}

// TestSavedVMsResume: a VM stopped by saving its state is started (and
// resumed) by the next apply, whatever its autostart; one stopped by hand
// is left alone when autostart is off.
func TestSavedVMsResume(t *testing.T) {
	cfg := parse(t, `
vms:
  a: { index: 1, autostart: false }
  b: { index: 2, autostart: false }
  c: { index: 3 }
`)
	var recs []state.RunRecord
	for _, vm := range cfg.VMs {
		recs = append(recs, state.RunRecord{Name: vm.Name, Spec: *vm, Saved: vm.Name != "b"})
	}
	p := Compute(cfg, FromRecords(recs, func(state.RunRecord) bool { return false }), Host{})
	got := map[string]Action{}
	for _, v := range p.VMs {
		got[v.Name] = v.Action
		if v.Action == Start && v.Steps[len(v.Steps)-1].Op != "resume" {
			t.Errorf("%s: steps %+v", v.Name, v.Steps)
		}
	}
	if got["a"] != Start || got["b"] != Unchanged || got["c"] != Start {
		t.Errorf("actions %v, want a and c started (saved), b unchanged", got)
	}
}

// What an apply reports having done is the wire's action names.
func TestPastIsTheWiresAction(t *testing.T) {
	for a, want := range map[Action]string{
		Create: apitypes.ActionCreated, Start: apitypes.ActionStarted, Update: apitypes.ActionRestarted,
		Remove: apitypes.ActionRemoved, Define: apitypes.ActionDefined, Unchanged: apitypes.ActionUnchanged,
	} {
		if got := a.Past(); got != want {
			t.Errorf("%s.Past() = %q, the API says %q", a, got, want)
		}
		if got := (apitypes.VMAction{Action: a.Past()}).Started(); got != a.Starts() {
			t.Errorf("a VMAction of %s: Started() = %v, the plan's Starts() %v", a, got, a.Starts())
		}
	}
}

// With the host's links known (a dry run of the reconcile), the network
// steps are what it would do: none for a VM defined before whose links
// are there, a repair for an unchanged VM whose TAP went, the links of a
// removed VM deleted; a VM whose volume is on disk at its size makes none.
func TestStepsFromTheHost(t *testing.T) {
	cfg := parse(t, `
vms:
  a: { index: 1, autostart: false }
  b: { index: 2 }
  c: { index: 3, volumes: [{ name: data, mountPoint: /data, size: 1G }] }
`)
	old := parse(t, "vms: { b: { index: 2 }, d: { index: 4 } }")
	host := Host{LinksKnown: true, Links: []apitypes.LinkChange{
		{Op: "delete-tuntap", Target: "vm-d"}, {Op: "delete-bridge", Target: "br-d"},
		{Op: "create-tuntap", Target: "vm-b"}, {Op: "attach", Target: "vm-b to br-b"}, {Op: "set-up", Target: "vm-b"},
		{Op: "create-bridge", Target: "br-c"}, {Op: "add-addr", Target: "10.3.0.1/24 on br-c"},
		{Op: "create-tuntap", Target: "vm-c"}, {Op: "set-sysctl", Target: "net.ipv6.conf.vm-c.disable_ipv6=1"},
		{Op: "set-sysctl", Target: "net.ipv4.ip_forward=1"},
	}, Volume: onDisk(map[string]config.Size{"c/data": 1 << 30})}
	p := Compute(cfg, running(old), host)
	got := map[string]string{}
	for _, v := range p.VMs {
		var ops []string
		for _, s := range v.Steps {
			ops = append(ops, string(s.Op))
		}
		got[v.Name] = v.Action.Past() + ": " + strings.Join(ops, " ")
	}
	want := map[string]string{
		"a": "defined: ",
		"b": "unchanged: reconfigure-network",
		"c": "created: create-bridge create-tap start",
		"d": "removed: stop delete-tap delete-bridge",
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s: %q, want %q", name, got[name], w)
		}
	}
	if p.Empty() {
		t.Error("a plan with steps is empty")
	}
}

// A tag that names another image than the VM runs is marked, with what
// the VM will boot; a digest reference, a store image, a VM not running
// and a registry that cannot be asked are not.
func TestMarkMovedTags(t *testing.T) {
	cfg := parse(t, `vms:
  moved: { index: 1, image: "r.test/app:1" }
  always: { index: 2, image: "r.test/app:1", pullPolicy: always }
  same: { index: 3, image: "r.test/app:2" }
  pinned: { index: 4, image: "r.test/app@sha256:0000000000000000000000000000000000000000000000000000000000000000" }
  local: { index: 5, image: base }
  new: { index: 6, image: "r.test/app:1" }
  down: { index: 7, image: "r.test/down:1" }
`)
	p := Compute(cfg, running(cfg), Host{})
	runs := map[string]string{"moved": "r.test/app@sha256:old", "always": "r.test/app@sha256:old", "same": "r.test/app@sha256:two",
		"pinned": "r.test/app@sha256:old", "local": "base", "down": "r.test/down@sha256:old"}
	tags := map[string]string{"r.test/app:1": "r.test/app@sha256:new", "r.test/app:2": "r.test/app@sha256:two"}
	var asked []string
	var warned []string
	p.MarkMovedTags(runs, func(vm *config.VM) (string, error) {
		asked = append(asked, vm.Name)
		if d, ok := tags[vm.Image]; ok {
			return d, nil
		}
		return "", errors.New("registry down")
	}, func(vm string, err error) { warned = append(warned, vm+": "+err.Error()) })
	got := map[string]*TagMove{}
	for _, v := range p.VMs {
		got[v.Name] = v.TagMoved
	}
	if m := got["moved"]; m == nil || m.Running != "r.test/app@sha256:old" || m.Now != "r.test/app@sha256:new" || !strings.Contains(m.Boots, "stored image until `microvm image pull r.test/app:1`") {
		t.Errorf("moved: %+v", m)
	}
	if m := got["always"]; m == nil || !strings.Contains(m.Boots, "new image at its next start") {
		t.Errorf("always: %+v", m)
	}
	for _, n := range []string{"same", "pinned", "local", "new", "down"} {
		if got[n] != nil {
			t.Errorf("%s marked as moved: %+v", n, got[n])
		}
	}
	if len(asked) != 4 {
		t.Errorf("asked the registry about %v, want the running tags only", asked)
	}
	if len(warned) != 1 || warned[0] != "down: registry down" {
		t.Errorf("warnings = %v", warned)
	}
}
