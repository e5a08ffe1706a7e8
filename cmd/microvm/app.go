package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"

	"github.com/spf13/cobra"

	"microvm.dev/microvm/internal/api"
	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/hostnet"
	"microvm.dev/microvm/internal/pathflags"
	"microvm.dev/microvm/internal/state"
)

// Exit codes of the command line.
const (
	exitOK     = 0
	exitFailed = 1 // the operation failed or found problems
	exitUsage  = 2 // the command line itself was wrong
)

// DefaultSocket is where the daemon listens.
const DefaultSocket = api.DefaultSocket

// app holds the global flags and the output streams of one invocation.
type app struct {
	stateDir string
	socket   string
	netns    string
	output   string
	// apiURL, apiToken and apiCA reach a daemon's TCP API instead of the socket.
	apiURL, apiTokenFile, apiCA string
	stdout                      io.Writer
	stderr                      io.Writer
}

// usageError marks a mistake in the command line (exit 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// reportedError marks a failure whose details were already printed (exit 1).
type reportedError struct{ err error }

func (e reportedError) Error() string { return e.err.Error() }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// run executes one command line and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	a := &app{stdout: stdout, stderr: stderr}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	switch {
	case err == nil:
		return exitOK
	case isUsage(err):
		fmt.Fprintf(stderr, "microvm: %v\nRun 'microvm --help' for usage.\n", err)
		return exitUsage
	case errors.As(err, new(reportedError)):
		return exitFailed
	case errors.As(err, new(exitCodeError)):
		var ec exitCodeError
		errors.As(err, &ec)
		return ec.code
	default:
		fmt.Fprintf(stderr, "microvm: %v\n", err)
		return exitFailed
	}
}

func isUsage(err error) bool {
	if errors.As(err, new(usageError)) {
		return true
	}
	// Cobra reports unknown verbs and flags as plain errors.
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "flag needs an argument", "invalid argument", "accepts ", "requires at least"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "microvm",
		Short: "Run an isolated fleet of micro-VMs from one declarative file",
		Long: `microvm turns a Linux host into a small fleet of micro-VMs described in one
YAML file kept in git: each VM on its own bridge network with NAT, a shared
read-only image store, an ephemeral /var and persistent data volumes.`,
		SilenceUsage:      true,
		SilenceErrors:     true,
		CompletionOptions: cobra.CompletionOptions{HiddenDefaultCmd: false},
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if a.output != "table" && a.output != "json" {
				return usagef("-o must be table or json, not %q", a.output)
			}
			// Host paths are absolute from here on: a relative --state-dir
			// would not be the same directory for a confined hypervisor.
			return pathflags.Absolute(cmd.Flags(), "state-dir", "socket", "netns", "api-token-file", "api-ca", "api-tls-cert", "api-tls-key",
				"config", "git-ssh-key", "git-token-file", "git-known-hosts", "webhook-secret-file", "init-dir", "kernel-cache")
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&a.stateDir, "state-dir", state.DefaultDir, "directory of microvm's state (volumes, run records, generations)")
	pf.StringVar(&a.socket, "socket", DefaultSocket, "the daemon's API socket")
	pf.StringVarP(&a.output, "output", "o", "table", "output format: table or json")
	pf.StringVar(&a.apiURL, "api-url", "", "reach the daemon's TCP API (https://host:port) instead of --socket")
	pf.StringVar(&a.apiTokenFile, "api-token-file", "", "file holding the TCP API's bearer token (the client's for --api-url, the daemon's for --api-listen)")
	pf.StringVar(&a.apiCA, "api-ca", "", "CA certificate (PEM) to trust for --api-url (default the system's)")
	pf.StringVar(&a.netns, "netns", "", "work in the network namespace at this path instead of the host's own (e.g. /run/netns/NAME)")
	root.AddCommand(a.validateCommand(), a.planCommand(), a.renderCommand(), a.netCommand(), a.runCommand(),
		a.daemonCommand(), a.applyCommand(), a.listCommand(),
		a.vmVerb("status", "Show one VM's state, process, boot time and restarts", "GET", ""),
		a.vmVerb("start", "Start a VM of the applied file", "POST", "/start"),
		a.stopCommand(),
		a.vmVerb("restart", "Shut a VM down cleanly and start it again", "POST", "/restart"),
		a.logsCommand(), a.rmCommand(), a.cloneCommand(), a.takeCommand(), a.execCommand(), a.sshCommand(), a.consoleCommand(), a.verifyCommand(), a.imageCommand(), a.deployCommand(), a.doctorCommand(), a.volumeCommand(), a.moveCommand(), a.drainCommand(), a.peerCommand(), a.secretCommand(), a.versionCommand())
	return root
}

// exactArgs is cobra.ExactArgs with a usage error.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s takes %d argument(s), got %d", cmd.CommandPath(), n, len(args))
		}
		return nil
	}
}

// fileFlag adds -f to cmd.
func fileFlag(cmd *cobra.Command, dst *string) {
	cmd.Flags().StringVarP(dst, "file", "f", "infra.yaml", "the config file")
}

// offlineFlag is --offline, the same on every verb that checks a file.
func offlineFlag(cmd *cobra.Command, dst *bool) {
	cmd.Flags().BoolVar(dst, "offline", false, "check the file alone, not against this machine's CPUs and addresses")
}

// hostOptions gathers the facts of the host (or --netns) that validation
// checks a file against.
func (a *app) hostOptions(offline bool) (config.Options, error) {
	if offline {
		return config.Options{}, nil
	}
	h, err := hostnet.Open(a.netns)
	if err != nil {
		return config.Options{}, err
	}
	defer h.Close()
	return h.HostOptions(runtime.NumCPU())
}

// load reads and validates the file, printing its problems on failure.
func (a *app) load(file string, offline bool) (*config.Config, error) {
	opts, err := a.hostOptions(offline)
	if err != nil {
		return nil, err
	}
	cfg, err := config.Load(file, opts)
	var ps config.Problems
	if errors.As(err, &ps) {
		for _, p := range ps {
			fmt.Fprintln(a.stderr, p)
		}
		return nil, reportedError{fmt.Errorf("%s: %d problem(s)", file, len(ps))}
	}
	return cfg, err
}

func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Version is the program's version, set at link time with -X main.Version=….
var Version = "dev"

func (a *app) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the version",
		Args:    exactArgs(0),
		Example: "  microvm version\n  microvm version -o json",
		RunE: func(*cobra.Command, []string) error {
			if a.output == "json" {
				return a.printJSON(map[string]string{"version": Version, "go": runtime.Version()})
			}
			fmt.Fprintf(a.stdout, "microvm %s (%s)\n", Version, runtime.Version())
			return nil
		},
	}
}
