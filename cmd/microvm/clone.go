package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"microvm.dev/microvm/internal/apitypes"
)

// cloneCommand is `clone TEMPLATE NAME…`: sandboxes started from a
// template's saved state, put through the API beside the file's VMs.
func (a *app) cloneCommand() *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "clone TEMPLATE NAME...",
		Short: "Start new VMs from a template's saved state, each with its own identity (removed with rm)",
		Long: `Clone starts one VM per NAME from the saved state of TEMPLATE (a VM of the
applied file with template: true), all at once, and waits until each is ready.
A clone is the template's machine and workload as they were saved, with its
own name, index (the lowest free ones), network, MAC, SSH host key,
machine-id and random seed (docs/clones.md). The daemon saves the template
first when it has no current state. Clones are put through the API like
microvm-kubelet's VMs: they outlive the daemon's restarts and are removed
with microvm rm NAME.`,
		Example: "  microvm clone sandbox job1 job2 job3\n  microvm exec job1 -- hostname\n  microvm rm job1",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 {
				return usagef("clone takes a template and at least one name")
			}
			return nil
		},
		RunE: func(_ *cobra.Command, args []string) error {
			return a.clone(args[0], args[1:], timeout)
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait for the clones to be ready")
	return cmd
}

// cloneResult is how one clone went.
type cloneResult struct {
	Name    string            `json:"name"`
	Index   int               `json:"index"`
	Seconds float64           `json:"seconds"`
	Status  apitypes.VMStatus `json:"status"`
	Error   string            `json:"error,omitempty"`
}

func (a *app) clone(template string, names []string, timeout time.Duration) error {
	t0 := time.Now()
	body, _ := json.Marshal(apitypes.CloneRequest{Names: names})
	var res apitypes.CloneResult
	if err := a.client().Do("POST", "/v1/vms/"+url.PathEscape(template)+"/clone", bytes.NewReader(body), &res); err != nil {
		if len(res.Problems) > 0 {
			return res.Problems
		}
		return err
	}
	results := make([]cloneResult, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() { results[i] = a.awaitClone(name, t0, timeout) })
	}
	wg.Wait()
	if a.output == "json" {
		return a.printJSON(results)
	}
	failed := 0
	for _, r := range results {
		if r.Error != "" {
			failed++
			fmt.Fprintf(a.stderr, "%s: %s\n", r.Name, r.Error)
			continue
		}
		addr := ""
		if s := r.Status.Spec; s != nil {
			addr = s.Net.Address.String()
		}
		fmt.Fprintf(a.stdout, "%s: ready in %.2fs at %s (%s)\n", r.Name, r.Seconds, addr, r.Status.Boot)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d clones did not start", failed, len(names))
	}
	return nil
}

// awaitClone waits until the clone name is ready (from t0), or failed.
func (a *app) awaitClone(name string, t0 time.Time, timeout time.Duration) cloneResult {
	res := cloneResult{Name: name}
	for deadline := t0.Add(timeout); ; time.Sleep(50 * time.Millisecond) {
		var st apitypes.VMStatus
		if err := a.client().Do("GET", "/v1/vms/"+url.PathEscape(name), nil, &st); err != nil {
			res.Error = err.Error()
			return res
		}
		res.Status = st
		switch {
		case st.State == apitypes.Running:
			res.Seconds = time.Since(t0).Seconds()
			return res
		case st.State == apitypes.Failed || st.State == apitypes.Backoff:
			res.Error = fmt.Sprintf("%s: %s", st.State, st.Failure)
			return res
		case time.Now().After(deadline):
			res.Error = fmt.Sprintf("not ready within %s (%s)", timeout, st.State)
			return res
		}
	}
}

// takeCommand is `take TEMPLATE`: a ready clone from the template's pool.
func (a *app) takeCommand() *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "take TEMPLATE",
		Short: "Take a ready clone from a template's pool (pool: N); it is yours until rm",
		Long: `Take hands out one of the clones the daemon keeps started and ready for a
template with pool: N, at once, and starts another in its place. The clone
is then like one made by microvm clone: yours until microvm rm NAME. With
none ready (all taken, or still starting), take waits up to --timeout.`,
		Example: "  vm=$(microvm take sandbox) && microvm exec $vm -- make test; microvm rm $vm",
		Args:    exactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			var st apitypes.VMStatus
			path := "/v1/vms/" + url.PathEscape(args[0]) + "/take?timeout=" + url.QueryEscape(timeout.String())
			if err := a.client().Do("POST", path, nil, &st); err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(st)
			}
			fmt.Fprintln(a.stdout, st.Name)
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "how long to wait when no clone is ready")
	return cmd
}
