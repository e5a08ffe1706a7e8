package main

import (
	"fmt"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/snapshot"
)

func (a *app) volumeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "volume",
		Short: "Volume snapshots and backups: snapshot, snapshots, backups, restore",
		Long: `Snapshots are point-in-time copies of a VM's data volumes, kept in
<state>/vms/<vm>/snapshots: a reflink where the filesystem shares blocks, else
a sparse copy. A running guest is asked to sync, paused for the copy and
resumed. snapshots.keep in the file prunes old ones; snapshots.every takes
them on a schedule; snapshots.backup also sends each one to a restic
repository off the host, from which any host with the VM in its file can
restore it (restore --from backup).`,
		Example: "  microvm volume snapshot vm2\n  microvm volume snapshots vm2\n  microvm volume restore vm2 data@20261123T100000.000Z\n" +
			"  microvm volume backups vm2\n  microvm volume restore --from backup vm2 data@20261123T100000.000Z",
		Args: exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			return usagef("volume needs a subcommand: snapshot, snapshots, backups or restore")
		},
	}
	print := func(list []snapshot.Snapshot) error {
		if a.output == "json" {
			return a.printJSON(list)
		}
		tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SNAPSHOT\tVOLUME\tTIME\tSIZE\tMETHOD\tBACKUP")
		for _, s := range list {
			sent := s.Backup
			if s.BackupError != "" {
				sent = "failed: " + s.BackupError
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.Volume, s.Time.Format(time.RFC3339), humanBytes(s.Size), s.Method, sent)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, s := range list {
			if s.BackupError != "" {
				return fmt.Errorf("the snapshot %s was kept, its backup failed: %s", s.Name, s.BackupError)
			}
		}
		return nil
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
			Use: "backups VM", Short: "List a VM's backups in its restic repository (sent from any host), oldest first", Example: "  microvm volume backups vm2 -o json",
			Args: exactArgs(1),
			RunE: func(_ *cobra.Command, args []string) error {
				var list []apitypes.Backup
				if err := a.client().Do("GET", "/v1/vms/"+url.PathEscape(args[0])+"/backups", nil, &list); err != nil {
					return err
				}
				if a.output == "json" {
					return a.printJSON(list)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SNAPSHOT\tVOLUME\tTIME\tHOST\tID")
				for _, b := range list {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", b.Snapshot, b.Volume, b.Time.Format(time.RFC3339), b.Host, b.ID)
				}
				return tw.Flush()
			},
		},
		a.restoreCommand(),
	)
	return cmd
}

func (a *app) restoreCommand() *cobra.Command {
	var from string
	cmd := &cobra.Command{
		Use: "restore VM SNAPSHOT", Short: "Copy a snapshot back over its volume (the VM stopped; the current state is kept as a snapshot)",
		Long: `restore copies SNAPSHOT (volume@time, from volume snapshots) back over its
volume; the VM must be stopped, and the volume as it was is kept as a snapshot
first. With --from backup the snapshot is first fetched from the VM's restic
repository (snapshots.backup), on any host whose file has the VM: one that
never ran it too.`,
		Example: "  microvm stop vm2 && microvm volume restore vm2 data@20261123T100000.000Z && microvm start vm2\n" +
			"  microvm volume restore --from backup vm2 data@20261123T100000.000Z",
		Args: exactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			if from != "" && from != "backup" {
				return usagef("--from %q: the only other source is backup", from)
			}
			var out apitypes.RestoreResponse
			path := "/v1/vms/" + url.PathEscape(args[0]) + "/snapshots/restore?snapshot=" + url.QueryEscape(args[1])
			if from != "" {
				path += "&from=" + from
			}
			if err := a.client().Do("POST", path, nil, &out); err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(out)
			}
			if out.Previous.Name == "" {
				fmt.Fprintf(a.stdout, "restored %s (the volume did not exist before)\n", out.Restored)
				return nil
			}
			fmt.Fprintf(a.stdout, "restored %s; the volume as it was is snapshot %s\n", out.Restored, out.Previous.Name)
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "where the snapshot comes from: backup (the VM's restic repository); default the local snapshots")
	return cmd
}
