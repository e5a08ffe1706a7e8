package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/launch"
)

// validateResult is validate's JSON output.
type validateResult struct {
	File     string           `json:"file"`
	Valid    bool             `json:"valid"`
	VMs      int              `json:"vms"`
	Problems []config.Problem `json:"problems"`
}

func (a *app) validateCommand() *cobra.Command {
	var file string
	var offline bool
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Check a config file; print one line per problem",
		Long: `Validate decodes the file strictly (unknown or duplicate keys and wrong types
are errors), merges the defaults into every VM and checks everything: names,
subnets, sizes, volumes, keys, rules. It prints every problem at once, one per
line as file:line: key.path: message, and exits 1 if there is any.

By default the file is also checked against this machine (its CPU count and
its own addresses) and against the images its store already has (the
entrypoint or command exists in the image, the user is in its /etc/passwd,
init: image finds an init); --offline checks the file alone.`,
		Example: "  microvm validate -f examples/reference/infra.yaml\n  microvm validate -f infra.yaml --offline -o json",
		Args:    exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			opts, err := a.hostOptions(offline)
			if err != nil {
				return err
			}
			cfg, err := config.Load(file, opts)
			res := validateResult{File: file, Problems: []config.Problem{}}
			var ps config.Problems
			switch {
			case errors.As(err, &ps):
				res.Problems = ps
			case err != nil:
				return err
			case !offline:
				// Images the store has are checked against what the VMs run.
				ps = launch.ImageProblems(launch.Env{StateDir: a.stateDir}, cfg.VMs, file)
				res.Problems = append(res.Problems, ps...)
				res.Valid, res.VMs = len(ps) == 0, len(cfg.VMs)
			default:
				res.Valid, res.VMs = true, len(cfg.VMs)
			}
			if a.output == "json" {
				if err := a.printJSON(res); err != nil {
					return err
				}
			} else if res.Valid {
				fmt.Fprintf(a.stdout, "%s: valid, %d VM(s)\n", file, res.VMs)
			} else {
				for _, p := range ps {
					fmt.Fprintln(a.stdout, p)
				}
			}
			if !res.Valid {
				return reportedError{fmt.Errorf("%d problem(s)", len(ps))}
			}
			return nil
		},
	}
	fileFlag(cmd, &file)
	offlineFlag(cmd, &offline)
	return cmd
}
