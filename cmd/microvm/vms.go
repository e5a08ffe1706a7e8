package main

// The client verbs that talk to a running daemon (apply, list, status,
// start, stop, restart, logs, rm); the daemon itself is in daemon.go.

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"microvm.dev/microvm/internal/api"
	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/steps"
)

// client talks to the daemon: on its socket, or on its TCP API with --api-url.
func (a *app) client() *api.Client {
	if a.apiURL == "" {
		return api.NewClient(a.socket)
	}
	token := ""
	if a.apiTokenFile != "" {
		b, err := os.ReadFile(a.apiTokenFile)
		if err != nil {
			return api.Unusable(fmt.Errorf("API token: %w", err))
		}
		token = strings.TrimSpace(string(b))
	}
	c, err := api.NewRemoteClient(a.apiURL, token, a.apiCA)
	if err != nil {
		return api.Unusable(err)
	}
	return c
}

func (a *app) applyCommand() *cobra.Command {
	var file string
	var verbose bool
	cmd := &cobra.Command{
		Use:   "apply",
		Short: "Hand the file to the daemon and wait for the fleet to converge",
		Long: `Apply sends the file to the daemon, which validates it against the host (a
file with problems changes nothing), stops VMs removed from it (their volumes
are kept), restarts the VMs whose spec changed and only those, creates new
ones, and answers when every VM it started is ready.`,
		Example: "  microvm apply -f examples/reference/infra.yaml",
		Args:    exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			data, err := os.ReadFile(file)
			if err != nil {
				return fmt.Errorf("read config: %w", err)
			}
			var res apitypes.ApplyResult
			err = a.client().Do("POST", "/v1/apply?file="+url.QueryEscape(file), bytes.NewReader(data), &res)
			if a.output == "json" {
				a.printJSON(res)
			} else {
				for _, p := range res.Problems {
					fmt.Fprintln(a.stderr, p)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "VM\tACTION\tBOOT\tERROR")
				for _, v := range res.VMs {
					boot := "-"
					if v.BootSeconds > 0 {
						boot = fmt.Sprintf("%.1fs", v.BootSeconds)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", v.Name, v.Action, boot, dash(v.Error))
				}
				if len(res.VMs) > 0 {
					tw.Flush()
				}
				if verbose {
					a.printSteps(res.VMs)
				}
			}
			if err != nil {
				var se *api.StatusError
				if errors.As(err, &se) && se.Code == http.StatusUnprocessableEntity {
					msg := fmt.Sprintf("%d problem(s); nothing was changed", len(res.Problems))
					fmt.Fprintln(a.stderr, msg)
					return reportedError{errors.New(msg)}
				}
				return err
			}
			for _, w := range res.Warnings {
				fmt.Fprintln(a.stderr, "warning:", w)
			}
			if a.output != "json" {
				fmt.Fprintf(a.stdout, "applied in %.1fs\n", res.Seconds)
			}
			return nil
		},
	}
	fileFlag(cmd, &file)
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print each started VM's launch steps with their times")
	return cmd
}

// stepLine is one launch step as run -v and apply -v print it.
func stepLine(t steps.Timing) string {
	return fmt.Sprintf("  %-36s %s", t.Name, time.Duration(t.Seconds*float64(time.Second)).Round(time.Microsecond))
}

// printSteps prints the launch steps of each VM an apply started.
func (a *app) printSteps(vms []apitypes.VMAction) {
	for _, v := range vms {
		if len(v.Steps) == 0 {
			continue
		}
		fmt.Fprintf(a.stdout, "\n%s:\n", v.Name)
		for _, s := range v.Steps {
			fmt.Fprintln(a.stdout, stepLine(s))
		}
	}
}

func (a *app) listCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List the VMs the daemon runs",
		Example: "  microvm list\n  microvm list -o json",
		Args:    exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			vms, err := a.client().VMs()
			if err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(vms)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSTATE\tIP\tHYPERVISOR\tVCPU\tMEMORY\tHOST MEM\tUPTIME\tBOOT\tRESTARTS\tEXIT")
			for _, v := range vms {
				ip, hv, vcpu, mem := "-", "-", "-", "-"
				if v.Spec != nil {
					ip, hv, vcpu, mem = v.Spec.Net.Address.String(), v.Spec.Hypervisor, fmt.Sprint(v.Spec.VCPU), v.Spec.Memory.String()
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", v.Name, v.State, ip, hv, vcpu, mem, hostMem(v), uptime(v), bootTime(v), v.Restarts, exitCode(v))
			}
			return tw.Flush()
		},
	}
}

func uptime(v apitypes.VMStatus) string {
	if v.PID == 0 || v.StartedAt.IsZero() {
		return "-"
	}
	return time.Since(v.StartedAt).Round(time.Second).String()
}

// hostMem is what the running VM costs the host in memory, or "-".
func hostMem(v apitypes.VMStatus) string {
	if v.HostMemory == nil {
		return "-"
	}
	return mib(v.HostMemory.Total)
}

// mib is a size in MiB, as the host's memory is counted.
func mib(b int64) string { return fmt.Sprintf("%d MiB", b>>20) }

func bootTime(v apitypes.VMStatus) string {
	if v.BootSeconds == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fs", v.BootSeconds)
}

func (a *app) vmVerb(use, short, method, suffix string) *cobra.Command {
	return &cobra.Command{
		Use:     use + " VM",
		Short:   short,
		Example: "  microvm " + use + " vm1",
		Args:    exactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			var st apitypes.VMStatus
			path := "/v1/vms/" + url.PathEscape(args[0]) + suffix
			if err := a.client().Do(method, path, nil, &st); err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(st)
			}
			if use == "status" {
				a.printStatus(st)
				return nil
			}
			fmt.Fprintf(a.stdout, "%s: %s\n", st.Name, st.State)
			return nil
		},
	}
}

// stopCommand is `stop [--save] VM` and `stop --all [--save]` (what the
// host's shutdown runs).
func (a *app) stopCommand() *cobra.Command {
	var all, save bool
	cmd := a.vmVerb("stop", "Shut a VM down cleanly (it stays stopped), or save it (--save); --all: every VM at once", "POST", "/stop")
	cmd.Use = "stop [--save] VM | stop --all [--save]"
	cmd.Example = "  microvm stop vm1\n  microvm stop --save vm1 && microvm start vm1\n  microvm stop --all"
	cmd.Long = `Stop shuts a VM down cleanly (its workload's stop signal, or the image's own
poweroff), within its stopTimeout, and leaves it stopped.

--save saves the running guest instead: its memory and devices go to a file
in the VM's directory (readable by the hypervisor's user alone, removed once
resumed) and the next start resumes it where it was, processes and all. A VM
is resumed only onto the same spec, kernel, image and volumes; after any
change the state is dropped and the VM boots cold (status says why). Saving
needs QEMU with store: block (QEMU cannot migrate a virtiofs device or a
mounted 9p export); a save that fails shuts the VM down cleanly instead.

--all stops (or saves) every running VM at once: the host's shutdown runs it
(dist/microvm-guests.service), so no guest is killed with unsynced data; the
next daemon starts the VMs whose autostart is on and resumes the saved ones.`
	one := cmd.RunE
	cmd.Args = func(c *cobra.Command, args []string) error {
		if all != (len(args) == 0) {
			return usagef("stop takes a VM, or --all")
		}
		return nil
	}
	cmd.RunE = func(c *cobra.Command, args []string) error {
		switch {
		case all:
			return a.stopAll(save)
		case save:
			return a.saveVM(args[0])
		}
		return one(c, args)
	}
	cmd.Flags().BoolVar(&all, "all", false, "stop every running VM at once (the host is shutting down)")
	cmd.Flags().BoolVar(&save, "save", false, "save the guest's state instead of shutting it down; start resumes it")
	return cmd
}

func (a *app) saveVM(name string) error {
	var res apitypes.SaveResponse
	if err := a.client().Do("POST", "/v1/vms/"+url.PathEscape(name)+"/save", nil, &res); err != nil {
		return err
	}
	if a.output == "json" {
		return a.printJSON(res)
	}
	if o := res.Outcome; o.Saved {
		fmt.Fprintf(a.stdout, "%s: saved (%.1f MiB in %.1fs)\n", name, float64(o.Bytes)/(1<<20), o.Seconds)
	} else {
		fmt.Fprintf(a.stdout, "%s: not saved (%s); shut down cleanly instead\n", name, o.Fallback)
	}
	return nil
}

func (a *app) stopAll(save bool) error {
	var res []apitypes.StopResult
	err := a.client().Do("POST", "/v1/stop?save="+strconv.FormatBool(save), nil, &res)
	if a.output == "json" {
		a.printJSON(res)
		return err
	}
	for _, r := range res {
		switch {
		case r.Error != "":
			fmt.Fprintf(a.stdout, "%s: %s after %.1fs\n", r.Name, r.Error, r.Seconds)
		case r.Saved:
			fmt.Fprintf(a.stdout, "%s: saved in %.1fs\n", r.Name, r.Seconds)
		case r.Fallback != "":
			fmt.Fprintf(a.stdout, "%s: not saved (%s); stopped in %.1fs\n", r.Name, r.Fallback, r.Seconds)
		default:
			fmt.Fprintf(a.stdout, "%s: stopped in %.1fs\n", r.Name, r.Seconds)
		}
	}
	return err
}

// exitCode is the workload's exit status that ended the VM, or "-".
func exitCode(st apitypes.VMStatus) string {
	if st.ExitCode == nil {
		return "-"
	}
	return fmt.Sprint(*st.ExitCode)
}

func (a *app) printStatus(st apitypes.VMStatus) {
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 1, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("name", st.Name)
	row("state", string(st.State))
	if st.Readiness != "" {
		row("init", st.Readiness)
	}
	if st.Spec != nil {
		row("address", st.Spec.Net.Address.String())
		row("hypervisor", st.Spec.Hypervisor)
		row("resources", fmt.Sprintf("%d vCPU, %s", st.Spec.VCPU, st.Spec.Memory))
		row("image", st.Spec.Image)
	}
	if m := st.HostMemory; m != nil {
		line := fmt.Sprintf("%s: guest %s, hypervisor %s, helpers %s", mib(m.Total), mib(m.Guest), mib(m.Hypervisor), mib(m.Helpers))
		if m.Balloon > 0 {
			line += fmt.Sprintf("; %s taken back (host.reclaim)", mib(m.Balloon))
		}
		row("host memory", line)
	}
	row("pid", dash(strings.TrimPrefix(fmt.Sprint(st.PID), "0")))
	row("uptime", uptime(st))
	row("boot", bootTime(st))
	row("restarts", fmt.Sprint(st.Restarts))
	row("last exit", dash(st.LastExit))
	row("exit code", exitCode(st))
	row("spec hash", st.SpecHash)
	tw.Flush()
	if st.Failure != "" {
		fmt.Fprintf(a.stdout, "failure:\n%s\n", st.Failure)
	}
}

func (a *app) logsCommand() *cobra.Command {
	var follow, daemonLog bool
	cmd := &cobra.Command{
		Use:     "logs VM | logs --daemon",
		Short:   "Print a VM's serial console, or the daemon's own log (-f to follow)",
		Example: "  microvm logs vm1\n  microvm logs -f vm1\n  microvm logs --daemon -f",
		Args: func(_ *cobra.Command, args []string) error {
			if daemonLog != (len(args) == 0) {
				return usagef("logs takes a VM name, or --daemon without one")
			}
			return nil
		},
		RunE: func(_ *cobra.Command, args []string) error {
			if daemonLog {
				return a.client().Stream(fmt.Sprintf("/v1/daemon/logs?follow=%v", follow), a.stdout)
			}
			return a.client().Stream(fmt.Sprintf("/v1/vms/%s/logs?follow=%v", url.PathEscape(args[0]), follow), a.stdout)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing what is written")
	cmd.Flags().BoolVar(&daemonLog, "daemon", false, "the daemon's own log (structured, with vm= and generation= attributes)")
	return cmd
}

func (a *app) rmCommand() *cobra.Command {
	var purge bool
	cmd := &cobra.Command{
		Use:   "rm VM",
		Short: "Forget a VM that is no longer in the file (--purge also deletes its volumes)",
		Long: `Rm stops and forgets a VM that has been removed from the file. Its data
volumes stay on disk unless --purge is given; a VM still in the applied file
is refused.`,
		Example: "  microvm rm old-vm\n  microvm rm old-vm --purge",
		Args:    exactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			var out map[string]any
			if err := a.client().Do("DELETE", fmt.Sprintf("/v1/vms/%s?purge=%v", url.PathEscape(args[0]), purge), nil, &out); err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(out)
			}
			what := "removed (volumes kept)"
			if purge {
				what = "removed with its volumes"
			}
			fmt.Fprintf(a.stdout, "%s %s\n", args[0], what)
			return nil
		},
	}
	cmd.Flags().BoolVar(&purge, "purge", false, "also delete the VM's volumes and files")
	return cmd
}
