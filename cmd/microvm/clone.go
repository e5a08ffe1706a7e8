package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
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
own name, index (the first free ones), network, MAC, SSH host key,
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
	vms, err := a.client().VMs()
	if err != nil {
		return err
	}
	used := map[int]bool{}
	for _, v := range vms {
		if v.Spec != nil {
			used[v.Spec.Index] = true
		}
	}
	var mu sync.Mutex
	next := func() int {
		mu.Lock()
		defer mu.Unlock()
		for i := 1; i <= 255; i++ {
			if !used[i] {
				used[i] = true
				return i
			}
		}
		return 0
	}
	results := make([]cloneResult, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = a.cloneOne(template, name, next, timeout)
		}()
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

// cloneOne puts the clone name of template with the first free index (the
// next one when another VM took it meanwhile) and waits until it is ready.
func (a *app) cloneOne(template, name string, next func() int, timeout time.Duration) cloneResult {
	t0 := time.Now()
	res := cloneResult{Name: name}
	for range 8 {
		res.Index = next()
		if res.Index == 0 {
			res.Error = "no free index (1-255) left"
			return res
		}
		entry, _ := json.Marshal(map[string]any{"from": template, "index": res.Index})
		var put apitypes.PutResult
		err := a.client().Do("PUT", "/v1/vms/"+url.PathEscape(name), bytes.NewReader(entry), &put)
		if err == nil {
			break
		}
		if len(put.Problems) == 1 && strings.HasSuffix(put.Problems[0].Path, ".index") {
			continue // taken by a VM put meanwhile
		}
		res.Error = err.Error()
		if len(put.Problems) > 0 {
			res.Error = put.Problems.Error()
		}
		return res
	}
	for deadline := time.Now().Add(timeout); ; time.Sleep(100 * time.Millisecond) {
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
