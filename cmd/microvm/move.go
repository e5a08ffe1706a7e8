package main

import (
	"fmt"
	"net/url"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/peer"
)

func (a *app) moveCommand() *cobra.Command {
	var to, mode string
	cmd := &cobra.Command{
		Use:   "move VM --to HOST",
		Short: "Move a VM and its data to another host's daemon",
		Long: `move moves the VM to the daemon of HOST (one of the file's peers, over TLS
with both hosts' keys checked). --mode says how, each falling back to the
next where the VM's hypervisor and store cannot (QEMU with store: block
can do all three), and the result says why:

  live   the VM runs on while its volumes and memory are copied, and pauses
         only for the last pass (about 0.3 s); its processes run on there
  saved  its state is saved here, sent with its volumes and resumed there:
         its processes run on, paused for the transfer
  cold   it is shut down cleanly, its volumes sent, and booted there

Volumes go as their allocated ranges, compressed, each file checked by its
digest there; then this host forgets the VM and deletes its copy. Until HOST runs it the VM and its data
stay here: a failure on the way (HOST unreachable, untrusting, out of room,
or dying half-way) starts it here again and leaves nothing there. A VM of
this host's file is recorded as moved (this host's applies leave it out)
until the file names HOST for it or it is moved back.`,
		Example: "  microvm move db --to host-b",
		Args:    exactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if to == "" {
				return usagef("move needs --to HOST")
			}
			var res apitypes.MoveResult
			q := url.Values{"to": {to}}
			if mode != "" {
				q.Set("mode", mode)
			}
			if err := a.client().Do("POST", "/v1/vms/"+url.PathEscape(args[0])+"/move?"+q.Encode(), nil, &res); err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(res)
			}
			a.printMoves([]apitypes.MoveResult{res})
			return nil
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "the host to move the VM to (a name in the file's peers)")
	cmd.Flags().StringVar(&mode, "mode", "live", "how a running VM moves: live, saved or cold (each falls back to the next where it cannot)")
	return cmd
}

func (a *app) drainCommand() *cobra.Command {
	var to, mode string
	var parallel int
	cmd := &cobra.Command{
		Use:   "drain [--to HOST,…] [--parallel N] [--mode live|saved|cold]",
		Short: "Move every VM of this host to other hosts",
		Long: `drain moves every VM of this host, as microvm move does, to the hosts --to
names (every other peer of the file when unset), each to the one with the
most room at that moment, N at a time. A VM that cannot move stays here as
it was and is listed with the reason; drain then exits 1.`,
		Example: "  microvm drain\n  microvm drain --to host-b,host-c --parallel 2",
		Args:    exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			q := url.Values{}
			if to != "" {
				q.Set("to", to)
			}
			if parallel > 0 {
				q.Set("parallel", fmt.Sprint(parallel))
			}
			if mode != "" {
				q.Set("mode", mode)
			}
			var res apitypes.DrainResult
			if err := a.client().Do("POST", "/v1/drain?"+q.Encode(), nil, &res); err != nil {
				return err
			}
			if a.output == "json" {
				if err := a.printJSON(res); err != nil {
					return err
				}
			} else {
				a.printMoves(res.Moved)
			}
			if len(res.Failed) > 0 {
				names := make([]string, 0, len(res.Failed))
				for n := range res.Failed {
					names = append(names, n)
				}
				sort.Strings(names)
				var why []string
				for _, n := range names {
					why = append(why, n+": "+res.Failed[n])
				}
				return fmt.Errorf("%d VM(s) stay on this host:\n  %s", len(names), strings.Join(why, "\n  "))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "the hosts to move the VMs to, comma-separated (default: every other peer of the file)")
	cmd.Flags().IntVar(&parallel, "parallel", 1, "how many VMs move at once")
	cmd.Flags().StringVar(&mode, "mode", "live", "how running VMs move: live, saved or cold (as move --mode)")
	return cmd
}

func (a *app) printMoves(list []apitypes.MoveResult) {
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VM\tFROM\tTO\tMODE\tDATA\tWIRE\tSECONDS\tDOWNTIME")
	for _, m := range list {
		var data, wire int64
		for _, f := range m.Files {
			if !f.Cached { // linked from the other host's kept copy: nothing sent
				data, wire = data+f.Data, wire+f.Wire
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%.1f\t%.1f\n", m.VM, m.From, m.To, m.Mode, humanBytes(data), humanBytes(wire), m.Seconds, m.Downtime)
	}
	tw.Flush()
	for _, m := range list {
		if m.Fallback != "" {
			fmt.Fprintf(a.stdout, "%s moved %s: %s\n", m.VM, m.Mode, m.Fallback)
		}
		if m.Boot != "" {
			fmt.Fprintf(a.stdout, "%s on %s: %s\n", m.VM, m.To, m.Boot)
		}
	}
}

func (a *app) peerCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "peer",
		Short:   "This host's identity among the file's peers",
		Example: "  microvm peer key",
		Args:    exactArgs(0),
		RunE:    func(*cobra.Command, []string) error { return usagef("peer needs a subcommand: key") },
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "key",
		Short: "Print this host's peer key (made on first use), for the file's peers",
		Long: `key prints the key this host's daemon is known by among the file's peers:
write it as peers.<this host>.key in the file. The key pair is made once in
<state>/peer and kept; the private key never leaves the host.`,
		Example: "  microvm peer key",
		Args:    exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			id, err := peer.Load(peer.Dir(a.stateDir))
			if err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, id.Key)
			return nil
		},
	})
	return cmd
}
