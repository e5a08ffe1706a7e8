package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"microvm.dev/microvm/internal/hostnet"
	"microvm.dev/microvm/internal/network"
)

func (a *app) netCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "net",
		Short: "Make the host's network match the file: bridges, TAPs, NAT, isolation",
		Long: `The net verbs manage the host side of the VMs' networks on their own, as the
daemon does on every reconcile: one bridge br-<vm> with the gateway address
and one TAP vm-<vm> per VM, IPv4 forwarding, and the nftables table
"inet microvm". Interfaces microvm did not create are never changed.`,
	}
	var file string
	var tapUser uint32
	var vmmUser runOptions
	apply := &cobra.Command{
		Use:   "apply",
		Short: "Create, change and remove bridges, TAPs and the firewall table to match the file",
		Long: `Apply measures the host first and changes only the differences, so running
it twice changes nothing the second time. The file is validated against the
host before anything changes; a conflict (an interface or address microvm
does not own in the way) changes nothing.`,
		Example: "  microvm net apply -f examples/reference/infra.yaml\n  microvm net apply -f infra.yaml --netns /run/netns/lab -o json",
		Args:    exactArgs(0),
		RunE: func(c *cobra.Command, _ []string) error {
			cfg, err := a.load(file, false)
			if err != nil {
				return err
			}
			// The TAPs belong to the user the daemon runs hypervisors as
			// (a TAP opened by name to its VM's own id, as the daemon
			// gives it), as the same flags say.
			o := a.launchOptions(vmmUser)
			o.NoSecrets = true
			env, err := a.newEnv(o)
			if err != nil {
				return err
			}
			owner, owners := env.TAPOwner(), env.TAPOwners
			if c.Flags().Changed("tap-owner") {
				owner, owners = tapUser, nil
			}
			m, err := network.New(a.netns, hostnet.Options{TAPOwner: owner})
			if err != nil {
				return err
			}
			defer m.Close()
			if owners != nil {
				m.OwnTAPs(owners)
			}
			res, err := m.Apply(cfg)
			if res != nil {
				a.printNetResult(res)
			}
			return err
		},
	}
	fileFlag(apply, &file)
	vmmUserFlags(apply, &vmmUser)
	apply.Flags().Uint32Var(&tapUser, "tap-owner", 0, "uid that owns the TAPs (default: the --vmm-user's, or each VM's own id from --vmm-ids for a hypervisor that opens its TAP by name)")

	show := &cobra.Command{
		Use:     "show",
		Short:   "Show microvm's interfaces and firewall table, and whether they match the file",
		Example: "  microvm net show -f examples/reference/infra.yaml",
		Args:    exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			cfg, err := a.load(file, true)
			if err != nil {
				return err
			}
			m, err := network.New(a.netns, hostnet.Options{})
			if err != nil {
				return err
			}
			defer m.Close()
			st, err := m.Show(cfg)
			if err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(st)
			}
			a.printNetStatus(st)
			return nil
		},
	}
	fileFlag(show, &file)

	teardown := &cobra.Command{
		Use:   "teardown",
		Short: "Remove every bridge, TAP and the table microvm created (volumes are not touched)",
		Long: `Teardown removes everything microvm made on the host's network, whatever
the file says: -f is accepted, as by its siblings, and not needed.`,
		Example: "  microvm net teardown",
		Args:    exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			m, err := network.New(a.netns, hostnet.Options{})
			if err != nil {
				return err
			}
			defer m.Close()
			res, err := m.Teardown()
			if res != nil {
				a.printNetResult(res)
			}
			return err
		},
	}
	var ignored string
	fileFlag(teardown, &ignored)
	cmd.AddCommand(apply, show, teardown)
	return cmd
}

func (a *app) printNetResult(res *network.Result) {
	if a.output == "json" {
		a.printJSON(res)
		return
	}
	for _, w := range res.Warnings {
		fmt.Fprintln(a.stderr, "warning:", w)
	}
	for _, c := range res.Links {
		fmt.Fprintf(a.stdout, "  %s\n", c)
	}
	switch {
	case res.Firewall && res.Hash != "":
		fmt.Fprintf(a.stdout, "  load nftables table inet microvm (ruleset %s)\n", res.Hash)
	case res.Firewall:
		fmt.Fprintln(a.stdout, "  delete nftables table inet microvm")
	}
	if !res.Changed() {
		fmt.Fprintln(a.stdout, "Nothing to change: the network already matches.")
	} else {
		fmt.Fprintf(a.stdout, "%d change(s).\n", len(res.Links)+btoi(res.Firewall))
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (a *app) printNetStatus(st *network.Status) {
	for _, w := range st.Warnings {
		fmt.Fprintln(a.stderr, "warning:", w)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INTERFACE\tVM\tTYPE\tSTATE\tMASTER\tADDRESSES")
	for _, l := range st.Links {
		state := "down"
		if l.Up {
			state = "up"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", l.Name, l.VM, l.Type, state, dash(l.Master), dash(strings.Join(l.Addrs, ",")))
	}
	tw.Flush()
	fw := "absent"
	if st.Loaded.Present {
		fw = "ruleset " + dash(st.Loaded.Hash)
	}
	fmt.Fprintf(a.stdout, "\nuplink: %s\nfirewall: table inet microvm %s (file wants %s)\n", dash(st.Uplink), fw, st.WantHash)
	if len(st.MissingVMs) > 0 {
		fmt.Fprintf(a.stdout, "missing or down: %s\n", strings.Join(st.MissingVMs, ", "))
	}
	if st.InSync {
		fmt.Fprintln(a.stdout, "in sync with the file")
	} else {
		fmt.Fprintln(a.stdout, "NOT in sync with the file: run microvm net apply")
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
