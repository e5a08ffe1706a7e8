package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/firewall"
	"microvm.dev/microvm/internal/hostnet"
	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/network"
	"microvm.dev/microvm/internal/vmm/qemu"
)

func (a *app) renderCommand() *cobra.Command {
	var file string
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
			cfg, err := a.load(file, true)
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
	if vm.Hypervisor != "qemu" {
		return fmt.Errorf("vms.%s: the %s backend is not available yet; only qemu renders a runner", name, vm.Hypervisor)
	}
	_, argv, err := launch.Command(a.launchEnv(o), vm)
	if err != nil {
		return err
	}
	if a.output == "json" {
		return a.printJSON(map[string]any{"vm": name, "argv": argv})
	}
	_, err = fmt.Fprintln(a.stdout, qemu.ShellQuote(argv))
	return err
}
