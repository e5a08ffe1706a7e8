package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/plan"
	"microvm.dev/microvm/internal/state"
	"microvm.dev/microvm/internal/supervisor"
	"microvm.dev/microvm/internal/testutil"
	"microvm.dev/microvm/internal/testvmm"
)

// randomFile is a fleet of some of four VMs, each with a random memory
// size, autostart, index (so a network of its own that may move) and
// volumes (none, one, or two; the first grows every tenth round: volumes
// never shrink).
func randomFile(r *rand.Rand, round int) string {
	var vms []string
	data := fmt.Sprintf("{ name: data, mountPoint: /data, size: %dM }", 16+8*(round/10))
	for i, name := range []string{"a", "b", "c", "d"} {
		if r.IntN(4) != 0 {
			vols := []string{"", "volumes: [" + data + "], ", "volumes: [" + data + ", { name: logs, mountPoint: /logs, size: 16M }], "}[r.IntN(3)]
			vms = append(vms, fmt.Sprintf("%s: { index: %d, memory: %s, %sautostart: %v }", name, i+1+4*r.IntN(2), []string{"512M", "1G"}[r.IntN(2)], vols, r.IntN(3) != 0))
		}
	}
	return "host: { externalInterface: up0 }\nvms: {" + strings.Join(vms, ", ") + "}\n"
}

// Plan and apply agree: over generated pairs of files, with VMs stopped by
// hand between them, what `microvm plan` computes from the state directory
// and what the daemon plans are what its apply then does, VM by VM: the
// same action, and the plan's host steps are the steps the apply reports
// having done (its stops, the links the network reconcile really made or
// deleted, the volumes the launch really made, grew or found, the boots),
// op by op in order.
func TestPlanAndApplyAgree(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNetns(t, "dplan")
	ns.IP(t, "link", "add", "up0", "type", "bridge")
	st := t.TempDir()
	env := launch.Env{StateDir: st, RunDir: filepath.Join(st, "run"), NetNS: ns.Path}
	d, err := NewWithLauncher(env, &testvmm.Launcher{StateDir: st}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 0))
	seen, seenOps := map[plan.Action]int{}, map[plan.Op]int{}
	for round := range 30 {
		src := randomFile(r, round)
		cfg, err := d.Parse("t.yaml", []byte(src))
		if err != nil {
			t.Fatalf("round %d: %v\n%s", round, err, src)
		}
		recs, err := state.Dir{Root: st}.RunRecords()
		if err != nil {
			t.Fatal(err)
		}
		cliPlan := plan.Compute(cfg, plan.FromRecords(recs, launch.Alive), d.planHost(cfg))
		cli, daemonPlan := actions(cliPlan), d.Plan(cfg)
		daemon := actions(daemonPlan)
		res, err := d.Apply("t.yaml", cfg)
		if err != nil {
			t.Fatalf("round %d: apply: %v", round, err)
		}
		applied, done := map[string]string{}, map[string]string{}
		for _, a := range res.VMs {
			applied[a.Name] = a.Action
			var ops []string
			for _, s := range a.Done {
				ops = append(ops, s.Op)
			}
			done[a.Name] = strings.Join(ops, " ")
		}
		for name, act := range daemon {
			seen[act]++
			if cli[name] != act || applied[name] != act.Past() {
				t.Errorf("round %d, %s: microvm plan says %q, the daemon plans %q, apply did %q\n%s", round, name, cli[name], act, applied[name], src)
			}
		}
		for _, p := range []*plan.Plan{cliPlan, daemonPlan} {
			for _, v := range p.VMs {
				var ops []string
				for _, s := range v.Steps {
					ops = append(ops, string(s.Op))
					seenOps[s.Op]++
				}
				if want := strings.Join(ops, " "); done[v.Name] != want {
					t.Errorf("round %d, %s (%s): the plan's steps are %q, the apply did %q\n%s", round, v.Name, v.Action, want, done[v.Name], src)
				}
			}
		}
		if len(cli) != len(daemon) || len(applied) != len(daemon) {
			t.Errorf("round %d: plan %v, daemon %v, applied %v", round, cli, daemon, applied)
		}
		// Stop a running VM by hand now and then: known, not running.
		if r.IntN(3) == 0 {
			for _, s := range d.sup.List() {
				if s.PID != 0 {
					d.sup.Stop(s.Name)
					break
				}
			}
		}
	}
	t.Logf("actions seen: %v; steps seen: %v", seen, seenOps)
	for _, a := range []plan.Action{plan.Create, plan.Start, plan.Update, plan.Remove, plan.Define, plan.Unchanged} {
		if seen[a] == 0 {
			t.Logf("no %s in this run (seed %d)", a, seed)
		}
	}
}

func actions(p *plan.Plan) map[string]plan.Action {
	out := map[string]plan.Action{}
	for _, v := range p.VMs {
		out[v.Name] = v.Action
	}
	return out
}

// VMs of the applied file that never started are listed (created), answer
// status, and start on request; before, list was empty and status said
// there was no such VM.
func TestDefinedVMsAreListed(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNetns(t, "ddef")
	ns.IP(t, "link", "add", "up0", "type", "bridge")
	st := t.TempDir()
	d, err := NewWithLauncher(launch.Env{StateDir: st, RunDir: filepath.Join(st, "run"), NetNS: ns.Path}, &testvmm.Launcher{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.ApplyFile("t.yaml", []byte("host: { externalInterface: up0 }\nvms: { a: { index: 1, autostart: false }, b: { index: 2 } }\n")); err != nil {
		t.Fatal(err)
	}
	list := d.List()
	if len(list) != 2 || list[0].Name != "a" || list[0].State != supervisor.Created || list[0].Spec == nil || list[1].State != supervisor.Running {
		t.Fatalf("list = %+v", list)
	}
	if st, ok := d.Status("a"); !ok || st.State != supervisor.Created {
		t.Errorf("status a: %+v %v", st, ok)
	}
	if err := d.Supervisor().Start(context.Background(), d.VMConfig("a")); err != nil {
		t.Fatal(err)
	}
	if st, _ := d.Status("a"); st.State != supervisor.Running {
		t.Errorf("after start: %+v", st)
	}
	if _, ok := d.Status("ghost"); ok {
		t.Error("a VM not in the file has a status")
	}
}
