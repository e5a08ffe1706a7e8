package main

import (
	"fmt"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"microvm.dev/microvm/internal/snapshot"
)

func (a *app) volumeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "volume",
		Short: "Volume snapshots: snapshot, snapshots, restore",
		Long: `Snapshots are point-in-time copies of a VM's data volumes, kept in
<state>/vms/<vm>/snapshots: a reflink where the filesystem shares blocks, else
a sparse copy. A running guest is asked to sync, paused for the copy and
resumed. snapshots.keep in the file prunes old ones; snapshots.every takes
them on a schedule.`,
		Example: "  microvm volume snapshot vm2\n  microvm volume snapshots vm2\n  microvm volume restore vm2 data@20261123T100000.000Z",
		Args:    exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			return usagef("volume needs a subcommand: snapshot, snapshots or restore")
		},
	}
	print := func(list []snapshot.Snapshot) error {
		if a.output == "json" {
			return a.printJSON(list)
		}
		tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SNAPSHOT\tVOLUME\tTIME\tSIZE\tMETHOD")
		for _, s := range list {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Name, s.Volume, s.Time.Format(time.RFC3339), humanBytes(s.Size), s.Method)
		}
		return tw.Flush()
	}
	cmd.AddCommand(
		&cobra.Command{
			Use: "snapshot VM [VOLUME]", Short: "Snapshot a VM's volumes (or one)", Example: "  microvm volume snapshot vm2\n  microvm volume snapshot vm2 data",
			Args: cobra.RangeArgs(1, 2),
			RunE: func(_ *cobra.Command, args []string) error {
				path := "/v1/vms/" + url.PathEscape(args[0]) + "/snapshots"
				if len(args) == 2 {
					path += "?volume=" + url.QueryEscape(args[1])
				}
				var list []snapshot.Snapshot
				if err := a.client().Do("POST", path, nil, &list); err != nil {
					return err
				}
				return print(list)
			},
		},
		&cobra.Command{
			Use: "snapshots VM", Short: "List a VM's snapshots, oldest first", Example: "  microvm volume snapshots vm2 -o json",
			Args: exactArgs(1),
			RunE: func(_ *cobra.Command, args []string) error {
				var list []snapshot.Snapshot
				if err := a.client().Do("GET", "/v1/vms/"+url.PathEscape(args[0])+"/snapshots", nil, &list); err != nil {
					return err
				}
				return print(list)
			},
		},
		&cobra.Command{
			Use: "restore VM SNAPSHOT", Short: "Copy a snapshot back over its volume (the VM stopped; the current state is kept as a snapshot)",
			Example: "  microvm stop vm2 && microvm volume restore vm2 data@20261123T100000.000Z && microvm start vm2",
			Args:    exactArgs(2),
			RunE: func(_ *cobra.Command, args []string) error {
				var out struct {
					Restored string            `json:"restored"`
					Previous snapshot.Snapshot `json:"previous"`
				}
				if err := a.client().Do("POST", "/v1/vms/"+url.PathEscape(args[0])+"/snapshots/restore?snapshot="+url.QueryEscape(args[1]), nil, &out); err != nil {
					return err
				}
				if a.output == "json" {
					return a.printJSON(out)
				}
				fmt.Fprintf(a.stdout, "restored %s; the volume as it was is snapshot %s\n", out.Restored, out.Previous.Name)
				return nil
			},
		},
	)
	return cmd
}
