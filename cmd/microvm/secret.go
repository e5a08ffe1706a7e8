package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"filippo.io/age"
	"github.com/spf13/cobra"

	"microvm.dev/microvm/internal/secrets"
)

// identityFlag adds --age-identity: the host's keys that decrypt secrets.
func identityFlag(fs *pflag.FlagSet, paths *[]string) {
	fs.StringSliceVar(paths, "age-identity", nil, "age identity files or SSH private keys that decrypt the VMs' secrets (default: "+strings.Join(secrets.DefaultIdentities(), ", ")+", those present)")
}

func (a *app) secretCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secret",
		Short: "Encrypt secrets for the file's VMs, and show this host's recipients",
		Long: `A VM's secrets: are files it is given from age-encrypted secrets written in the
file itself (ASCII-armored, so git holds only ciphertext). The daemon decrypts
them with this host's keys (--age-identity; by default /etc/microvm/age.key and
the SSH host key /etc/ssh/ssh_host_ed25519_key) and gives each only to its VM,
in the VM's memory.`,
		Example: "  microvm secret recipient\n  microvm secret encrypt --to-host db-password.txt\n  microvm secret encrypt -r age1… -r \"ssh-ed25519 AAAA…\" - < token",
		Args:    exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			return usageError{fmt.Errorf("secret needs a subcommand: encrypt or recipient")}
		},
	}
	var identities, to []string
	var toHost bool
	identityFlag(cmd.PersistentFlags(), &identities)
	load := func() ([]secrets.Identity, error) { return secrets.HostIdentities(identities) }
	recipient := &cobra.Command{
		Use:     "recipient",
		Short:   "Print the recipients of this host's keys (what secrets are encrypted to)",
		Example: "  microvm secret recipient",
		Args:    exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			ids, err := load()
			if err != nil {
				return err
			}
			if len(ids) == 0 {
				return fmt.Errorf("this host has no age identity (create one: age-keygen -o /etc/microvm/age.key, or give --age-identity)")
			}
			for _, id := range ids {
				fmt.Fprintf(a.stdout, "%s\t# %s\n", id.Recipient, id.Path)
			}
			return nil
		},
	}
	encrypt := &cobra.Command{
		Use:   "encrypt [-r RECIPIENT]… [--to-host] FILE|-",
		Short: "Encrypt a file (- for standard input) to recipients, printing ASCII-armored age",
		Long: `Encrypt prints the file encrypted to each -r recipient (age1… or an SSH public
key) and, with --to-host, to this host's own keys: paste it as a secret's age:
value (a YAML block scalar: age: |).`,
		Example: "  microvm secret encrypt --to-host db-password.txt",
		Args:    exactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			var rs []age.Recipient
			for _, r := range to {
				rec, err := secrets.ParseRecipient(r)
				if err != nil {
					return usageError{fmt.Errorf("recipient %q: %w", r, err)}
				}
				rs = append(rs, rec)
			}
			if toHost {
				ids, err := load()
				if err != nil {
					return err
				}
				for _, id := range ids {
					rec, err := secrets.ParseRecipient(id.Recipient)
					if err != nil {
						return err
					}
					rs = append(rs, rec)
				}
			}
			if len(rs) == 0 {
				return usageError{fmt.Errorf("no recipients: give -r RECIPIENT or --to-host")}
			}
			in := io.Reader(os.Stdin)
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				in = f
			}
			plain, err := io.ReadAll(io.LimitReader(in, secrets.MaxSize+1))
			if err != nil {
				return err
			}
			if len(plain) > secrets.MaxSize {
				return fmt.Errorf("%s is larger than %d bytes", args[0], secrets.MaxSize)
			}
			armored, err := secrets.Encrypt(plain, rs...)
			if err != nil {
				return err
			}
			fmt.Fprint(a.stdout, armored)
			return nil
		},
	}
	encrypt.Flags().StringArrayVarP(&to, "recipient", "r", nil, "encrypt to this recipient (age1… or an SSH public key); repeatable")
	encrypt.Flags().BoolVar(&toHost, "to-host", false, "also encrypt to this host's own keys")
	cmd.AddCommand(recipient, encrypt)
	return cmd
}
