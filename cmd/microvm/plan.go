package main

import (
	"context"
	"fmt"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/daemon"
	"microvm.dev/microvm/internal/hostnet"
	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/network"
	"microvm.dev/microvm/internal/plan"
	"microvm.dev/microvm/internal/state"
)

func (a *app) planCommand() *cobra.Command {
	var file string
	var offline bool
	var vmmUser runOptions
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Show what apply would change, VM by VM",
		Long: `Plan compares the file with what the state directory records as started
(vms/<name>/run.json, running while its recorded process lives) and lists for
each VM whether apply would create it, start it, restart it with a new spec
(and which fields changed), remove it (its volumes are kept), define it
without starting it (autostart: false) or leave it alone, with the host steps
of each. The daemon's apply executes this same plan. For each running VM whose
image is a tag, the registry is asked which image the tag names now: a tag
that moved since the VM booted is shown with both digests and what the VM
boots at its next start. With no recorded state
every VM is created. VMs put one by one through the daemon's API
(PUT /v1/vms/{name}, as microvm-kubelet does) are not in the plan: a
file's apply leaves them alone.`,
		Example: "  microvm plan -f examples/reference/infra.yaml\n  microvm plan -f infra.yaml --state-dir /tmp/state -o json",
		Args:    exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			cfg, err := a.load(file, offline)
			if err != nil {
				return err
			}
			dir := state.Dir{Root: a.stateDir}
			recs, err := dir.RunRecords()
			if err != nil {
				return err
			}
			// The VMs put through the daemon's API are not the file's to change.
			api, err := dir.APIVMs()
			if err != nil {
				return err
			}
			recs = slices.DeleteFunc(recs, func(r state.RunRecord) bool { return api[r.Name] != nil })
			// The network steps are a dry run of the reconcile in the
			// namespace, with the TAPs' owners the daemon would give them
			// (unknown without access to the namespace: assumed).
			o := a.launchOptions(vmmUser)
			o.NoSecrets = true
			env, err := a.newEnv(o)
			if err != nil {
				return err
			}
			m, err := network.New(a.netns, hostnet.Options{TAPOwner: env.TAPOwner()})
			if err != nil {
				fmt.Fprintf(a.stderr, "warning: the network steps are assumed: %v\n", err)
				m = nil
			} else {
				defer m.Close()
				m.OwnTAPs(env.TAPOwners)
			}
			p := plan.Compute(cfg, plan.FromRecords(recs, launch.Alive), daemon.PlanHost(m, a.stateDir, cfg))
			a.markMovedTags(p, recs, env)
			if a.output == "json" {
				return a.printJSON(p)
			}
			a.printPlan(file, p)
			return nil
		},
	}
	fileFlag(cmd, &file)
	offlineFlag(cmd, &offline)
	vmmUserFlags(cmd, &vmmUser)
	return cmd
}

// markMovedTags asks each running VM's registry whether its image tag
// still names the image it runs (a registry that cannot be asked is a
// warning, not an error: the plan stands without it).
func (a *app) markMovedTags(p *plan.Plan, recs []state.RunRecord, env launch.Env) {
	running := map[string]string{}
	for _, r := range recs {
		if r.Image != "" && launch.Alive(r) {
			running[r.Name] = r.Image
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p.MarkMovedTags(running, func(vm *config.VM) (string, error) { return launch.TagDigest(ctx, env, vm) },
		func(vm string, err error) {
			fmt.Fprintf(a.stderr, "warning: %s: whether its image tag moved is unknown: %v\n", vm, err)
		})
}

var actionSign = map[plan.Action]string{plan.Create: "+", plan.Start: ">", plan.Update: "~", plan.Remove: "-", plan.Define: ".", plan.Unchanged: "="}

func (a *app) printPlan(file string, p *plan.Plan) {
	c := p.Counts()
	fmt.Fprintf(a.stdout, "Plan for %s (state %s): %d to create, %d to start, %d to update, %d to remove, %d to define, %d unchanged\n\n",
		file, a.stateDir, c[plan.Create], c[plan.Start], c[plan.Update], c[plan.Remove], c[plan.Define], c[plan.Unchanged])
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\tVM\tACTION\tSUBNET\tADDRESS\tBRIDGE\tTAP\tMAC")
	for _, v := range p.VMs {
		if v.Desired == nil {
			fmt.Fprintf(tw, "%s\t%s\t%s\t-\t-\t-\t-\t-\n", actionSign[v.Action], v.Name, v.Action)
			continue
		}
		n := v.Desired.Net
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", actionSign[v.Action], v.Name, v.Action, n.Subnet, n.Address, n.Bridge, n.TAP, n.MAC)
	}
	tw.Flush()
	for _, v := range p.VMs {
		if v.Action == plan.Unchanged && len(v.Steps) == 0 && v.TagMoved == nil {
			continue
		}
		fmt.Fprintf(a.stdout, "\n%s %s (%s)\n", actionSign[v.Action], v.Name, v.Action)
		if m := v.TagMoved; m != nil {
			fmt.Fprintf(a.stdout, "    image tag moved: %s runs %s, the tag names %s now; boots %s\n", m.Image, m.Running, m.Now, m.Boots)
		}
		for _, ch := range v.Changes {
			fmt.Fprintf(a.stdout, "    %s: %s → %s\n", ch.Field, ch.From, ch.To)
		}
		for _, s := range v.Steps {
			fmt.Fprintf(a.stdout, "    %-20s %s\n", s.Op, s.Detail)
		}
	}
	if p.Empty() {
		fmt.Fprintln(a.stdout, "\nNothing to do.")
	}
}
