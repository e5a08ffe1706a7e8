package daemon

import (
	"os"
	"strings"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/hostnet"
	"microvm.dev/microvm/internal/network"
	"microvm.dev/microvm/internal/plan"
	"microvm.dev/microvm/internal/state"
	"microvm.dev/microvm/internal/volume"
)

// change is one VM's change under way: its plan, what the host had of it
// before (the spec it was known with, whether its hypervisor ran), and
// what was done, in the plan's terms (VMAction.Done), so that what an
// apply reports having done can be held against what `microvm plan` said
// (TestPlanAndApplyAgree).
type change struct {
	plan    plan.VMPlan
	old     *config.VM // nil: not known before
	running bool
	a       *VMAction
}

// newChange is v's change, with what the supervisor knows of the VM now.
func (d *Daemon) newChange(v plan.VMPlan) *change {
	c := &change{plan: v, a: &VMAction{Name: v.Name, Action: v.Action.Past()}}
	if st, ok := d.sup.Status(v.Name); ok {
		c.old, c.running = st.Spec, st.PID != 0
	}
	return c
}

func (c *change) done(op plan.Op, detail string) {
	c.a.Done = append(c.a.Done, apitypes.HostStep{Op: string(op), Detail: detail})
}

// links are the interfaces of the change's VM, new and old.
func (c *change) links() []string {
	var out []string
	for _, vm := range []*config.VM{c.plan.Desired, c.old} {
		if vm != nil {
			out = append(out, vm.Net.Bridge, vm.Net.TAP)
		}
	}
	return out
}

// networkDone records what a network reconcile did to the changes' VMs'
// links (links: its changes), in the plan's terms (plan.LinkSteps).
func networkDone(changes []*change, links []hostnet.Change) {
	for _, c := range changes {
		for _, st := range plan.LinkSteps(c.plan.Action, c.plan.Desired, c.old, links) {
			c.done(st.Op, st.Detail)
		}
	}
}

// keptDone records the volumes of a removed VM that stayed on disk.
func (c *change) keptDone(stateDir string) {
	if c.old == nil {
		return
	}
	dir := state.Dir{Root: stateDir}.VMDir(c.plan.Name)
	for _, v := range c.old.Volumes {
		if _, err := os.Stat(volume.Path(dir, v.Name)); err == nil {
			c.done(plan.OpKeepVolume, v.Name)
		}
	}
}

// startDone records what a start did: each volume its launch created or
// grew (launched says what the launch did to each), the volumes of the
// spec it replaced that it left on disk unattached, and the boot itself:
// a resume (boot, the status's description of it, says so) or a start.
func (c *change) startDone(stateDir string, launched map[string]string, boot string) {
	vm := c.plan.Desired
	attached := map[string]bool{}
	for _, v := range vm.Volumes {
		attached[v.Name] = true
		switch volume.Action(launched[v.Name]) {
		case volume.Created:
			c.done(plan.OpEnsureVolume, v.Name)
		case volume.Grown:
			c.done(plan.OpGrowVolume, v.Name)
		}
	}
	if c.old != nil && c.plan.Action == plan.Update {
		dir := state.Dir{Root: stateDir}.VMDir(vm.Name)
		for _, v := range c.old.Volumes {
			if _, err := os.Stat(volume.Path(dir, v.Name)); err == nil && !attached[v.Name] {
				c.done(plan.OpDetachVolume, v.Name)
			}
		}
	}
	if strings.HasPrefix(boot, "resumed") {
		c.done(plan.OpResume, vm.Name)
	} else {
		c.done(plan.OpStart, vm.Name)
	}
}

// stopDone runs stop (a stop or a removal of the VM) and records the stop
// when the VM's hypervisor ran.
func (c *change) stopDone(stop func() error) {
	c.a.StopSeconds, c.a.Error = timed(stop)
	if c.a.Error == "" && c.running {
		c.done(plan.OpStop, c.plan.Name)
	}
}

// PlanHost is what a plan of cfg knows of the host (plan.Host): the link
// changes a network reconcile of cfg would make (a dry run in m's
// namespace; unknown without m or when it cannot be made, a conflict for
// one: the apply says why) and the volumes in the state directory.
func PlanHost(m *network.Manager, stateDir string, cfg *config.Config) plan.Host {
	h := plan.Host{Volume: func(vm, name string) (config.Size, bool) {
		fi, err := os.Stat(volume.Path(state.Dir{Root: stateDir}.VMDir(vm), name))
		if err != nil {
			return 0, false
		}
		return config.Size(fi.Size()), true
	}}
	if m == nil {
		return h
	}
	if links, err := m.Plan(cfg); err == nil {
		h.Links, h.LinksKnown = links, true
	}
	return h
}

// planHost is PlanHost in the daemon's namespace (one network operation
// at a time).
func (d *Daemon) planHost(cfg *config.Config) plan.Host {
	d.netMu.Lock()
	defer d.netMu.Unlock()
	return PlanHost(d.net, d.env.StateDir, cfg)
}
