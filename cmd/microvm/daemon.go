package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"microvm.dev/microvm/internal/apiserver"
	"microvm.dev/microvm/internal/daemon"
	"microvm.dev/microvm/internal/deploy"
	"microvm.dev/microvm/internal/logging"
	"microvm.dev/microvm/internal/metrics"
	"microvm.dev/microvm/internal/peer"
	"microvm.dev/microvm/internal/webui"
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
	cmd.Flags().StringVar(&g.uiListen, "ui-listen", "", "also serve the web console (and the API, token required) over plain HTTP on this loopback address, for a quick look (off by default; the console is always on --api-listen)")
	cmd.Flags().StringVar(&g.peerListen, "peer-listen", "", "serve the other hosts' daemons (the file's peers) on this TCP address, TLS with both ends' keys checked, to move VMs between hosts (off by default; this host is --host-name among the peers)")
	cmd.Flags().StringVar(&g.metrics, "metrics-listen", "", "serve Prometheus metrics at /metrics on this address (off by default; a bare :PORT binds loopback)")
	cmd.Flags().StringVar(&logFormat, "log-format", logging.FormatAuto, "auto (journald under systemd, else text), text, json or journald")
	cmd.Flags().DurationVar(&g.sampleEvery, "sample-every", daemon.SampleEvery, "how often the VMs' host memory, CPU and network are measured (kept an hour) and the host's memory checked against host.reclaim")
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
	if g.uiListen != "" {
		if a.apiTokenFile == "" {
			return usagef("--ui-listen needs --api-token-file: the console asks for the token")
		}
		addr, err := loopbackAddr(g.uiListen)
		if err != nil {
			return err
		}
		g.uiListen = addr
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
	if g.sampleEvery < time.Second {
		return usagef("--sample-every %s is under a second", g.sampleEvery)
	}
	d, err := daemon.New(env, log)
	if err != nil {
		return err
	}
	defer d.Close()
	d.SetSampleEvery(g.sampleEvery)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var dep *deploy.Engine
	if g.url != "" {
		if dep, err = a.deployEngine(d, g, log); err != nil {
			return err
		}
	}
	ln, err := apiserver.Listen(a.socket)
	if err != nil {
		return err
	}
	handler := apiserver.Handler(d, dep)
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	log.Info("listening", "socket", a.socket)
	if g.apiListen != "" {
		if err := serveTCPAPI(ctx, g.apiListen, g.apiCert, g.apiKey, a.apiTokenFile, handler, log); err != nil {
			srv.Close()
			return err
		}
	}
	if g.uiListen != "" {
		if err := serveUI(ctx, g.uiListen, a.apiTokenFile, handler, log); err != nil {
			srv.Close()
			return err
		}
	}
	if g.peerListen != "" {
		if err := servePeers(ctx, g.peerListen, g.hostName, a.stateDir, d, log); err != nil {
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

// serveTCPAPI serves the API and the web console on addr over TLS,
// bearer token (or the console's session) required.
func serveTCPAPI(ctx context.Context, addr, certFile, keyFile, tokenFile string, h http.Handler, log interface{ Info(string, ...any) }) error {
	if certFile == "" || keyFile == "" || tokenFile == "" {
		return usagef("--api-listen needs --api-tls-cert, --api-tls-key and --api-token-file: the TCP API is TLS with a bearer token only")
	}
	token, err := readToken(tokenFile)
	if err != nil {
		return err
	}
	ln, err := apiserver.ListenTLS(addr, certFile, keyFile)
	if err != nil {
		return err
	}
	serveUntil(ctx, ln, webui.Handler(h, token, true))
	log.Info("TCP API and web console listening", "addr", ln.Addr().String(), "console", "https://"+ln.Addr().String()+"/ui/")
	return nil
}

// servePeers serves the other hosts' daemons on addr: TLS with this
// host's peer identity, clients checked against the file's peers.
func servePeers(ctx context.Context, addr, host, stateDir string, d *daemon.Daemon, log interface{ Info(string, ...any) }) error {
	if host == "" {
		return usagef("--peer-listen needs --host-name: the name the file's peers know this host by")
	}
	id, err := peer.Load(peer.Dir(stateDir))
	if err != nil {
		return err
	}
	d.EnablePeers(host, id)
	ln, err := tls.Listen("tcp", addr, id.ServerTLS(d.TrustPeer))
	if err != nil {
		return fmt.Errorf("--peer-listen %s: %w", addr, err)
	}
	serveUntil(ctx, ln, apiserver.PeerHandler(d))
	log.Info("peers listening", "addr", ln.Addr().String(), "host", host, "key", id.Key)
	return nil
}

// serveUI serves the web console and the API over plain HTTP on a
// loopback address (a bare ":PORT" binds 127.0.0.1), token required.
func serveUI(ctx context.Context, addr, tokenFile string, h http.Handler, log interface{ Info(string, ...any) }) error {
	token, err := readToken(tokenFile)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("web console: %w", err)
	}
	serveUntil(ctx, ln, webui.Handler(h, token, false))
	log.Info("web console listening", "url", "http://"+ln.Addr().String()+"/ui/")
	return nil
}

// loopbackAddr is addr for --ui-listen: a loopback address and port (a
// bare ":PORT" binds 127.0.0.1), as plain HTTP is for this host only.
func loopbackAddr(addr string) (string, error) {
	addr = bareLoopback(addr)
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		return "", usagef("--ui-listen %s: plain HTTP is for a loopback address only (127.0.0.1:PORT); serve the console to other machines with --api-listen (TLS)", addr)
	}
	return addr, nil
}

// readToken reads the API token, at least 16 bytes.
func readToken(tokenFile string) ([]byte, error) {
	b, err := os.ReadFile(tokenFile)
	if err != nil {
		return nil, fmt.Errorf("API token: %w", err)
	}
	token := strings.TrimSpace(string(b))
	if len(token) < 16 {
		return nil, fmt.Errorf("the API token in %s is shorter than 16 bytes", tokenFile)
	}
	return []byte(token), nil
}

// serveMetrics serves h at /metrics on addr; a bare ":PORT" binds loopback.
func serveMetrics(ctx context.Context, addr string, h http.Handler, log interface{ Info(string, ...any) }) error {
	ln, err := net.Listen("tcp", bareLoopback(addr))
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", h)
	serveUntil(ctx, ln, mux)
	log.Info("metrics listening", "addr", ln.Addr().String(), "path", "/metrics")
	return nil
}

// serveUntil serves h on ln until ctx ends.
func serveUntil(ctx context.Context, ln net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	go func() { <-ctx.Done(); srv.Close() }()
}

// bareLoopback is addr with a bare ":PORT" bound to 127.0.0.1.
func bareLoopback(addr string) string {
	if strings.HasPrefix(addr, ":") {
		return "127.0.0.1" + addr
	}
	return addr
}
