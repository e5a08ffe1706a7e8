package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/daemon"
	"microvm.dev/microvm/internal/deploy"
	"microvm.dev/microvm/internal/generation"
	"microvm.dev/microvm/internal/gitsync"
)

// gitOptions are the daemon's GitOps flags.
type gitOptions struct {
	url, branch, path     string
	interval, health      time.Duration
	tokenFile, sshKey     string
	knownHosts            string
	keys                  []string
	hook, hostName        string
	webhook, webhookToken string
	history               int
	metrics               string
	apiListen, apiCert    string
	peerListen            string
	uiListen              string
	apiKey                string
	// sampleEvery is --sample-every (the daemon's, beside its listeners').
	sampleEvery time.Duration
}

func gitFlags(cmd *cobra.Command, g *gitOptions) {
	host, _ := os.Hostname()
	f := cmd.Flags()
	f.StringVar(&g.url, "git-url", "", "deploy from this git repository (GitOps mode): https://…, ssh://…, or a path")
	f.StringVar(&g.branch, "git-branch", "main", "the branch deployed")
	f.StringVar(&g.path, "git-path", "infra.yaml", "the config file's path in the repository")
	f.DurationVar(&g.interval, "git-interval", time.Minute, "how often the branch is fetched")
	f.StringVar(&g.tokenFile, "git-token-file", "", "file holding an HTTPS access token")
	f.StringVar(&g.sshKey, "git-ssh-key", "", "SSH private key for ssh:// remotes (logging in as the URL's user, git when it names none)")
	f.StringVar(&g.knownHosts, "git-known-hosts", "", "known_hosts file holding the SSH remote's host key (default ~/.ssh/known_hosts, or $SSH_KNOWN_HOSTS)")
	f.StringSliceVar(&g.keys, "require-signed-by", nil, "deploy only commits signed by these keys: an armored OpenPGP key file or an SSH allowed_signers file (repeatable)")
	f.DurationVar(&g.health, "health-timeout", 2*time.Minute, "how long changed VMs have to become ready and healthy before a rollback")
	f.StringVar(&g.hook, "post-deploy-hook", "", "shell command run after every deploy, with MICROVM_* variables")
	f.StringVar(&g.hostName, "host-name", host, "this host's name, for files whose VMs name their host")
	f.StringVar(&g.webhook, "webhook-listen", "", "serve the push webhook on this address (e.g. 127.0.0.1:9180)")
	f.StringVar(&g.webhookToken, "webhook-secret-file", "", "file holding the webhook's shared secret (required with --webhook-listen)")
	f.IntVar(&g.history, "history", 20, "generations retained")
}

func (a *app) deployEngine(d *daemon.Daemon, g gitOptions, log *slog.Logger) (*deploy.Engine, error) {
	m, err := gitsync.Open(gitsync.Options{URL: g.url, Branch: g.branch, Dir: filepath.Join(a.stateDir, "git"), TokenFile: g.tokenFile, SSHKeyFile: g.sshKey, KnownHostsFile: g.knownHosts})
	if err != nil {
		return nil, err
	}
	var keys *gitsync.Keys
	if len(g.keys) > 0 {
		if keys, err = gitsync.LoadKeys(g.keys...); err != nil {
			return nil, err
		}
	}
	d.Supervisor().ReadyTimeout = g.health
	return deploy.New(d, generation.Open(a.stateDir, g.history), deploy.Options{
		Mirror: m, Branch: g.branch, Path: g.path, Interval: g.interval, HealthTimeout: g.health,
		Keys: keys, Hook: g.hook, HostName: g.hostName, NetNS: a.netns,
	}, log), nil
}

func (a *app) serveWebhook(ctx context.Context, dep *deploy.Engine, g gitOptions, log *slog.Logger) error {
	if g.webhook == "" {
		return nil
	}
	if g.webhookToken == "" {
		return usagef("--webhook-listen needs --webhook-secret-file")
	}
	b, err := os.ReadFile(g.webhookToken)
	if err != nil {
		return fmt.Errorf("webhook secret: %w", err)
	}
	secret := []byte(strings.TrimSpace(string(b)))
	if len(secret) < 16 {
		return fmt.Errorf("webhook secret in %s is shorter than 16 bytes", g.webhookToken)
	}
	ln, err := net.Listen("tcp", g.webhook)
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/deploy/webhook", dep.Webhook(secret))
	serveUntil(ctx, ln, mux)
	log.Info("webhook listening", "addr", ln.Addr().String(), "path", "/v1/deploy/webhook")
	return nil
}

func (a *app) deployCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "deploy",
		Short: "GitOps deploys: status, history, trigger, rollback, suspend, resume",
		Long: `With --git-url the daemon deploys the repository's branch: every new commit
becomes a generation that is verified, validated, applied (only changed VMs
restart), health-checked and rolled back on failure. These verbs inspect and
steer that loop.`,
		Example: "  microvm deploy status\n  microvm deploy history\n  microvm deploy rollback 12",
		Args:    exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			return usageError{errors.New("deploy needs a subcommand: status, history, trigger, rollback, suspend or resume")}
		},
	}
	simple := func(use, short, path string) *cobra.Command {
		return &cobra.Command{Use: use, Short: short, Example: "  microvm deploy " + use, Args: exactArgs(0),
			RunE: func(*cobra.Command, []string) error {
				var out map[string]any
				if err := a.client().Do("POST", "/v1/deploy/"+path, nil, &out); err != nil {
					return err
				}
				if a.output == "json" {
					return a.printJSON(out)
				}
				fmt.Fprintln(a.stdout, "ok:", path)
				return nil
			}}
	}
	cmd.AddCommand(
		&cobra.Command{Use: "status", Short: "Current, last good and last attempted generation, next poll", Example: "  microvm deploy status", Args: exactArgs(0),
			RunE: func(*cobra.Command, []string) error {
				var st apitypes.DeployStatus
				if err := a.client().Do("GET", "/v1/deploy", nil, &st); err != nil {
					return err
				}
				if a.output == "json" {
					return a.printJSON(st)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintf(tw, "branch\t%s (%s)\n", st.Branch, st.Path)
				fmt.Fprintf(tw, "current\t%s\n", genLine(st.Current))
				fmt.Fprintf(tw, "last attempt\t%s\n", genLine(st.Last))
				fmt.Fprintf(tw, "remote head\t%s\n", short(st.RemoteHead))
				if st.FetchErr != "" {
					fmt.Fprintf(tw, "fetch error\t%s\n", st.FetchErr)
				}
				if !st.NextPoll.IsZero() {
					fmt.Fprintf(tw, "next poll\t%s\n", time.Until(st.NextPoll).Round(time.Second))
				}
				fmt.Fprintf(tw, "suspended\t%t\n", st.Suspended)
				return tw.Flush()
			}},
		&cobra.Command{Use: "history", Short: "The retained generations, newest first", Example: "  microvm deploy history -o json", Args: exactArgs(0),
			RunE: func(*cobra.Command, []string) error {
				var h []apitypes.Generation
				if err := a.client().Do("GET", "/v1/deploy/history", nil, &h); err != nil {
					return err
				}
				if a.output == "json" {
					return a.printJSON(h)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "GEN\tSTATUS\tCOMMIT\tAUTHOR\tSTARTED\tMESSAGE")
				for _, g := range h {
					msg, _, _ := strings.Cut(g.Commit.Message, "\n")
					if g.Error != "" {
						msg += " — " + g.Error
					}
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", g.Number, g.Status, short(g.Commit.Hash), g.Commit.Author, g.Started.Format(time.RFC3339), msg)
				}
				return tw.Flush()
			}},
		simple("trigger", "Fetch the branch now", "trigger"),
		simple("suspend", "Stop polling (the fleet keeps running)", "suspend"),
		simple("resume", "Resume polling", "resume"),
		&cobra.Command{Use: "rollback [GEN]", Short: "Put back generation GEN (default: the good one before the current)", Example: "  microvm deploy rollback\n  microvm deploy rollback 12",
			Args: cobra.MaximumNArgs(1),
			RunE: func(_ *cobra.Command, args []string) error {
				path := "/v1/deploy/rollback"
				if len(args) == 1 {
					if _, err := strconv.Atoi(args[0]); err != nil {
						return usagef("%q is not a generation number", args[0])
					}
					path += "?generation=" + args[0]
				}
				var g apitypes.Generation
				err := a.client().Do("POST", path, nil, &g)
				if a.output == "json" && g.Number > 0 {
					a.printJSON(g)
				} else if g.Number > 0 {
					fmt.Fprintf(a.stdout, "generation %d: %s\n", g.Number, g.Status)
				}
				return err
			}},
	)
	return cmd
}

func genLine(g *apitypes.Generation) string {
	if g == nil {
		return "none"
	}
	s := fmt.Sprintf("%d %s %s %q by %s", g.Number, g.Status, short(g.Commit.Hash), firstLineOf(g.Commit.Message), g.Commit.Author)
	if g.Error != "" {
		s += ": " + g.Error
	}
	return s
}

func firstLineOf(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
