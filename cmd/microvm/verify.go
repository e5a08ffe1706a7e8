package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/verify"
)

func (a *app) verifyCommand() *cobra.Command {
	var o runOptions
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check the host against the file and print PASS/FAIL/SKIP per check",
		Long: `Verify checks that this host has what the file's VMs need: each hypervisor
binary the file names, each VM's kernel (and that its hypervisor can boot it),
how the store reaches guests (virtiofsd where needed), mkfs.ext4, nft, and
cgroups for VMs with limits. With a daemon running the file, it then checks
the live fleet: bridges and their gateways, forwarding, NAT, every VM
running and answering over SSH with its hostname, vCPUs and memory, reaching
its gateway and the host's default gateway, unable to reach the other VMs
(except allowed pairs), a read-only store, an ephemeral /var (the image's,
on the root's in-memory overlay, reset at every boot), its volumes
mounted, and its declared ports answering from the host. Each check prints
its evidence; the exit status is 1 when any check fails.`,
		Example: "  microvm verify -f examples/reference/infra.yaml\n  microvm verify -f infra.yaml -o json",
		Args:    exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			cfg, err := a.load(o.file, true)
			if err != nil {
				return err
			}
			env, err := a.launchEnv(o)
			if err != nil {
				return err
			}
			checks := verify.Prerequisites(cfg, env, nil)
			var vms []apitypes.VMStatus
			if err := a.client().Do("GET", "/v1/vms", nil, &vms); err != nil {
				checks = append(checks, verify.Check{Name: "live fleet", Run: func() (verify.Status, string) {
					return verify.Skip, err.Error()
				}})
			} else {
				byName := map[string]apitypes.VMStatus{}
				for _, v := range vms {
					byName[v.Name] = v
				}
				checks = append(checks, verify.Live(verify.Fleet{Config: cfg, StateDir: a.stateDir, NetNS: a.netns,
					Status: func(n string) (apitypes.VMStatus, bool) { st, ok := byName[n]; return st, ok }})...)
			}
			return a.printResults(verify.Run(checks))
		},
	}
	fileFlag(cmd, &o.file)
	launchFlags(cmd, &o)
	return cmd
}

func (a *app) doctorCommand() *cobra.Command {
	var o runOptions
	var gitURL, knownHosts string
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check this host's prerequisites, with the fix for each",
		Long: `Doctor checks what any fleet needs on this host: KVM (else VMs are emulated),
TUN, vhost-net, nftables, cgroups, QEMU, virtiofsd, mkfs.ext4 and a guest
kernel. A failing check says how to fix it; the exit status is 1 when one
fails. SKIP marks what is missing but has a slower fallback. With the
daemon's --git-url and --git-known-hosts it also checks that the known
hosts file holds the SSH remote's host key.`,
		Example: "  microvm doctor\n  microvm doctor -o json\n  microvm doctor --git-url ssh://deploy@git.example:2222/infra.git --git-known-hosts /etc/microvm/known_hosts",
		Args:    exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			env, err := a.launchEnv(o)
			if err != nil {
				return err
			}
			checks := verify.Doctor(env, nil)
			if knownHosts != "" {
				checks = append(checks, verify.GitKnownHosts(gitURL, knownHosts))
			}
			return a.printResults(verify.Run(checks))
		},
	}
	launchFlags(cmd, &o)
	cmd.Flags().StringVar(&gitURL, "git-url", "", "the daemon's --git-url, for the known hosts check")
	cmd.Flags().StringVar(&knownHosts, "git-known-hosts", "", "the daemon's --git-known-hosts: check it holds the SSH remote's host key")
	return cmd
}

// printResults prints check results and fails when one failed.
func (a *app) printResults(results []verify.Result) error {
	failed := verify.Failed(results)
	if a.output == "json" {
		if err := a.printJSON(map[string]any{"results": results, "failed": failed}); err != nil {
			return err
		}
	} else {
		colour := colourful(a.stdout)
		tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		for _, r := range results {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", statusWord(r.Status, colour), r.Name, r.Evidence)
		}
		tw.Flush()
	}
	if failed > 0 {
		return reportedError{fmt.Errorf("%d of %d checks failed", failed, len(results))}
	}
	return nil
}
