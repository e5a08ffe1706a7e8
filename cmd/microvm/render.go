package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/firewall"
	"microvm.dev/microvm/internal/hostnet"
	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/network"
	"microvm.dev/microvm/internal/vmm"
)

func (a *app) renderCommand() *cobra.Command {
	var file string
	var offline bool
	var o runOptions
	cmd := &cobra.Command{
		Use:   "render nftables | render runner VM",
		Short: "Print the generated nftables ruleset or a VM's hypervisor command line",
		Long: `Render prints what microvm generates from the file, exactly as it is used:
  nftables    the nft script that replaces the table "inet microvm" in one transaction
  runner VM   the hypervisor command line that starts the VM`,
		Example: "  microvm render nftables -f examples/reference/infra.yaml\n  microvm render runner vm1 -f examples/reference/infra.yaml",
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) == 1 && args[0] == "nftables":
			case len(args) == 2 && args[0] == "runner":
			default:
				return usagef("render takes 'nftables' or 'runner VM'")
			}
			return nil
		},
		ValidArgs: []string{"nftables", "runner"},
		RunE: func(_ *cobra.Command, args []string) error {
			cfg, err := a.load(file, offline)
			if err != nil {
				return err
			}
			if args[0] == "nftables" {
				return a.renderNftables(cfg)
			}
			return a.renderRunner(cfg, args[1], o)
		},
	}
	fileFlag(cmd, &file)
	offlineFlag(cmd, &offline)
	launchFlags(cmd, &o)
	return cmd
}

func (a *app) renderNftables(cfg *config.Config) error {
	m, err := network.New(a.netns, hostnet.Options{})
	if err != nil {
		return err
	}
	defer m.Close()
	rs, uplink, warnings, err := m.Ruleset(cfg)
	if err != nil {
		return err
	}
	for _, w := range warnings {
		fmt.Fprintln(a.stderr, "warning:", w)
	}
	if a.output == "json" {
		return a.printJSON(map[string]any{"table": firewall.Family + " " + firewall.Name, "hash": rs.Hash, "uplink": uplink, "rules": firewall.RuleCount(rs.Body), "script": rs.Script()})
	}
	_, err = fmt.Fprint(a.stdout, rs.Script())
	return err
}

func (a *app) renderRunner(cfg *config.Config, name string, o runOptions) error {
	vm := cfg.VM(name)
	if vm == nil {
		return fmt.Errorf("no VM named %q in the file", name)
	}
	env, err := a.launchEnv(o)
	if err != nil {
		return err
	}
	res, err := launch.Command(env, vm)
	if err != nil {
		return err
	}
	cmd := res.Command
	files := map[string]string{}
	for path, b := range cmd.Files {
		files[path] = string(b)
	}
	if a.output == "json" {
		return a.printJSON(map[string]any{"vm": name, "hypervisor": vm.Hypervisor, "argv": cmd.Argv, "files": files})
	}
	// Configuration files first, as comments, then the command line.
	for _, path := range slices.Sorted(maps.Keys(files)) {
		if files[path] == "" {
			continue
		}
		fmt.Fprintf(a.stdout, "# %s:\n", path)
		for _, line := range strings.Split(strings.TrimRight(files[path], "\n"), "\n") {
			fmt.Fprintf(a.stdout, "#   %s\n", line)
		}
	}
	_, err = fmt.Fprintln(a.stdout, vmm.ShellQuote(cmd.Argv))
	return err
}
