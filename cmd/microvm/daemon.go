package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"microvm.dev/microvm/internal/api"
	"microvm.dev/microvm/internal/daemon"
	"microvm.dev/microvm/internal/deploy"
	"microvm.dev/microvm/internal/logging"
	"microvm.dev/microvm/internal/metrics"
	"microvm.dev/microvm/internal/supervisor"
)

func (a *app) daemonCommand() *cobra.Command {
	var o runOptions
	var file, logFormat string
	var g gitOptions
	cmd := &cobra.Command{
		Use:   "daemon --config FILE",
		Short: "Run the daemon: apply the file, supervise the VMs, serve the API",
		Long: `The daemon makes the host match the file and keeps it there: it adopts VMs a
previous daemon started, applies the file (VMs whose spec changed are
restarted, and only those), restarts VMs that exit by their restart policy,
and serves the API on --socket that the other verbs use. Stopping or killing
the daemon never stops a VM. Logs are structured: sent to the journal (with
VM=… fields) when systemd connected standard error to it, text lines on
standard error otherwise (--log-format picks).`,
		Example: "  microvm daemon --config /etc/microvm/infra.yaml",
		Args:    exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			return a.runDaemon(file, logFormat, o, g)
		},
	}
	cmd.Flags().StringVar(&file, "config", "", "the config file to apply at start")
	gitFlags(cmd, &g)
	cmd.Flags().StringVar(&g.apiListen, "api-listen", "", "also serve the API on this TCP address, TLS with a bearer token (off by default)")
	cmd.Flags().StringVar(&g.apiCert, "api-tls-cert", "", "certificate (PEM) for --api-listen")
	cmd.Flags().StringVar(&g.apiKey, "api-tls-key", "", "private key (PEM) for --api-listen")
	cmd.Flags().StringVar(&g.metrics, "metrics-listen", "", "serve Prometheus metrics at /metrics on this address (off by default; a bare :PORT binds loopback)")
	cmd.Flags().StringVar(&logFormat, "log-format", logging.FormatAuto, "auto (journald under systemd, else text), text, json or journald")
	launchFlags(cmd, &o)
	return cmd
}

func (a *app) runDaemon(file, logFormat string, o runOptions, g gitOptions) error {
	if g.url != "" && file != "" {
		return usagef("--config and --git-url exclude each other: in GitOps mode the file comes from the repository")
	}
	if g.apiListen != "" && (g.apiCert == "" || g.apiKey == "" || a.apiTokenFile == "") {
		return usagef("--api-listen needs --api-tls-cert, --api-tls-key and --api-token-file: the TCP API is TLS with a bearer token only")
	}
	logFile, err := logging.OpenRotating(daemon.DaemonLog(a.stateDir), 10<<20, 3)
	if err != nil {
		return err
	}
	defer logFile.Close()
	log, _, err := logging.New(logFormat, a.stderr, logFile)
	if err != nil {
		return usageError{err}
	}
	env, err := a.launchEnv(o)
	if err != nil {
		return err
	}
	d, err := daemon.New(env, log)
	if err != nil {
		return err
	}
	defer d.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var dep *deploy.Engine
	if g.url != "" {
		if dep, err = a.deployEngine(d, g, log); err != nil {
			return err
		}
	}
	ln, err := api.Listen(a.socket)
	if err != nil {
		return err
	}
	handler := api.Handler(d, dep)
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	log.Info("listening", "socket", a.socket)
	if g.apiListen != "" {
		if err := serveTCPAPI(ctx, g.apiListen, g.apiCert, g.apiKey, a.apiTokenFile, handler, log); err != nil {
			srv.Close()
			return err
		}
	}
	if g.metrics != "" {
		if err := serveMetrics(ctx, g.metrics, metrics.New(d, dep), log); err != nil {
			srv.Close()
			return err
		}
	}
	if dep != nil {
		if err := a.serveWebhook(ctx, dep, g, log); err != nil {
			srv.Close()
			return err
		}
		go func() {
			if err := dep.Recover(ctx); err != nil {
				log.Error("recover the deployed generation", "err", err)
			}
			dep.Run(ctx)
		}()
	}
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("read config: %w", err)
		}
		go func() {
			res, err := d.ApplyFile(file, data)
			if err != nil {
				// A bad file never stops running VMs: report and keep serving.
				attrs := []any{"file", file, "err", err}
				if res != nil && len(res.Problems) > 0 {
					attrs = append(attrs, "problems", res.Problems.Error())
				}
				log.Error("apply failed", attrs...)
			}
		}()
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	s := <-sigs
	log.Info("stopping the daemon; VMs keep running", "signal", s.String())
	cancel()
	srv.Close()
	os.Remove(a.socket)
	return nil
}

// client talks to the daemon: on its socket, or on its TCP API with --api-url.
func (a *app) client() *api.Client {
	if a.apiURL == "" {
		return api.NewClient(a.socket)
	}
	token := ""
	if a.apiTokenFile != "" {
		b, err := os.ReadFile(a.apiTokenFile)
		if err != nil {
			return api.Unusable(fmt.Errorf("API token: %w", err))
		}
		token = strings.TrimSpace(string(b))
	}
	c, err := api.NewRemoteClient(a.apiURL, token, a.apiCA)
	if err != nil {
		return api.Unusable(err)
	}
	return c
}

// serveTCPAPI serves the API on addr over TLS, bearer token required.
func serveTCPAPI(ctx context.Context, addr, certFile, keyFile, tokenFile string, h http.Handler, log interface{ Info(string, ...any) }) error {
	if certFile == "" || keyFile == "" || tokenFile == "" {
		return usagef("--api-listen needs --api-tls-cert, --api-tls-key and --api-token-file: the TCP API is TLS with a bearer token only")
	}
	b, err := os.ReadFile(tokenFile)
	if err != nil {
		return fmt.Errorf("API token: %w", err)
	}
	token := strings.TrimSpace(string(b))
	if len(token) < 16 {
		return fmt.Errorf("the API token in %s is shorter than 16 bytes", tokenFile)
	}
	ln, err := api.ListenTLS(addr, certFile, keyFile)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: api.WithToken(h, []byte(token)), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	go func() { <-ctx.Done(); srv.Close() }()
	log.Info("TCP API listening", "addr", ln.Addr().String())
	return nil
}

func (a *app) applyCommand() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "apply",
		Short: "Hand the file to the daemon and wait for the fleet to converge",
		Long: `Apply sends the file to the daemon, which validates it against the host (a
file with problems changes nothing), stops VMs removed from it (their volumes
are kept), restarts the VMs whose spec changed and only those, creates new
ones, and answers when every VM it started is ready.`,
		Example: "  microvm apply -f examples/reference/infra.yaml",
		Args:    exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			data, err := os.ReadFile(file)
			if err != nil {
				return fmt.Errorf("read config: %w", err)
			}
			var res daemon.ApplyResult
			err = a.client().Do("POST", "/v1/apply?file="+url.QueryEscape(file), bytes.NewReader(data), &res)
			if a.output == "json" {
				a.printJSON(res)
			} else {
				for _, p := range res.Problems {
					fmt.Fprintln(a.stderr, p)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "VM\tACTION\tBOOT\tERROR")
				for _, v := range res.VMs {
					boot := "-"
					if v.BootSeconds > 0 {
						boot = fmt.Sprintf("%.1fs", v.BootSeconds)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", v.Name, v.Action, boot, dash(v.Error))
				}
				if len(res.VMs) > 0 {
					tw.Flush()
				}
			}
			if err != nil {
				var se *api.StatusError
				if errors.As(err, &se) && se.Code == http.StatusUnprocessableEntity {
					msg := fmt.Sprintf("%d problem(s); nothing was changed", len(res.Problems))
					fmt.Fprintln(a.stderr, msg)
					return reportedError{errors.New(msg)}
				}
				return err
			}
			for _, w := range res.Warnings {
				fmt.Fprintln(a.stderr, "warning:", w)
			}
			if a.output != "json" {
				fmt.Fprintf(a.stdout, "applied in %.1fs\n", res.Seconds)
			}
			return nil
		},
	}
	fileFlag(cmd, &file)
	return cmd
}

func (a *app) listCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List the VMs the daemon runs",
		Example: "  microvm list\n  microvm list -o json",
		Args:    exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			vms, err := a.client().VMs()
			if err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(vms)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSTATE\tIP\tHYPERVISOR\tVCPU\tMEMORY\tUPTIME\tBOOT\tRESTARTS")
			for _, v := range vms {
				ip, hv, vcpu, mem := "-", "-", "-", "-"
				if v.Spec != nil {
					ip, hv, vcpu, mem = v.Spec.Net.Address.String(), v.Spec.Hypervisor, fmt.Sprint(v.Spec.VCPU), v.Spec.Memory.String()
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", v.Name, v.State, ip, hv, vcpu, mem, uptime(v), bootTime(v), v.Restarts)
			}
			return tw.Flush()
		},
	}
}

func uptime(v supervisor.Status) string {
	if v.PID == 0 || v.StartedAt.IsZero() {
		return "-"
	}
	return time.Since(v.StartedAt).Round(time.Second).String()
}

func bootTime(v supervisor.Status) string {
	if v.BootSeconds == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fs", v.BootSeconds)
}

func (a *app) vmVerb(use, short, method, suffix string) *cobra.Command {
	return &cobra.Command{
		Use:     use + " VM",
		Short:   short,
		Example: "  microvm " + use + " vm1",
		Args:    exactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			var st supervisor.Status
			path := "/v1/vms/" + url.PathEscape(args[0]) + suffix
			if err := a.client().Do(method, path, nil, &st); err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(st)
			}
			if use == "status" {
				a.printStatus(st)
				return nil
			}
			fmt.Fprintf(a.stdout, "%s: %s\n", st.Name, st.State)
			return nil
		},
	}
}

func (a *app) printStatus(st supervisor.Status) {
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 1, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("name", st.Name)
	row("state", string(st.State))
	if st.Spec != nil {
		row("address", st.Spec.Net.Address.String())
		row("hypervisor", st.Spec.Hypervisor)
		row("resources", fmt.Sprintf("%d vCPU, %s", st.Spec.VCPU, st.Spec.Memory))
		row("image", st.Spec.Image)
	}
	row("pid", dash(strings.TrimPrefix(fmt.Sprint(st.PID), "0")))
	row("uptime", uptime(st))
	row("boot", bootTime(st))
	row("restarts", fmt.Sprint(st.Restarts))
	row("last exit", dash(st.LastExit))
	row("spec hash", st.SpecHash)
	tw.Flush()
	if st.Failure != "" {
		fmt.Fprintf(a.stdout, "failure:\n%s\n", st.Failure)
	}
}

func (a *app) logsCommand() *cobra.Command {
	var follow, daemonLog bool
	cmd := &cobra.Command{
		Use:     "logs VM | logs --daemon",
		Short:   "Print a VM's serial console, or the daemon's own log (-f to follow)",
		Example: "  microvm logs vm1\n  microvm logs -f vm1\n  microvm logs --daemon -f",
		Args: func(_ *cobra.Command, args []string) error {
			if daemonLog != (len(args) == 0) {
				return usagef("logs takes a VM name, or --daemon without one")
			}
			return nil
		},
		RunE: func(_ *cobra.Command, args []string) error {
			if daemonLog {
				return a.client().Stream(fmt.Sprintf("/v1/daemon/logs?follow=%v", follow), a.stdout)
			}
			return a.client().Stream(fmt.Sprintf("/v1/vms/%s/logs?follow=%v", url.PathEscape(args[0]), follow), a.stdout)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing what is written")
	cmd.Flags().BoolVar(&daemonLog, "daemon", false, "the daemon's own log (structured, with vm= and generation= attributes)")
	return cmd
}

func (a *app) rmCommand() *cobra.Command {
	var purge bool
	cmd := &cobra.Command{
		Use:   "rm VM",
		Short: "Forget a VM that is no longer in the file (--purge also deletes its volumes)",
		Long: `Rm stops and forgets a VM that has been removed from the file. Its data
volumes stay on disk unless --purge is given; a VM still in the applied file
is refused.`,
		Example: "  microvm rm old-vm\n  microvm rm old-vm --purge",
		Args:    exactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			var out map[string]any
			if err := a.client().Do("DELETE", fmt.Sprintf("/v1/vms/%s?purge=%v", url.PathEscape(args[0]), purge), nil, &out); err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(out)
			}
			what := "removed (volumes kept)"
			if purge {
				what = "removed with its volumes"
			}
			fmt.Fprintf(a.stdout, "%s %s\n", args[0], what)
			return nil
		},
	}
	cmd.Flags().BoolVar(&purge, "purge", false, "also delete the VM's volumes and files")
	return cmd
}

// serveMetrics serves h at /metrics on addr; a bare ":PORT" binds loopback.
func serveMetrics(ctx context.Context, addr string, h http.Handler, log interface{ Info(string, ...any) }) error {
	if strings.HasPrefix(addr, ":") {
		addr = "127.0.0.1" + addr
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	go func() { <-ctx.Done(); srv.Close() }()
	log.Info("metrics listening", "addr", ln.Addr().String(), "path", "/metrics")
	return nil
}
