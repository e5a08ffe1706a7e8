package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/state"
	"microvm.dev/microvm/internal/store"
	"microvm.dev/microvm/internal/vmm"
)

func (a *app) imageCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Manage the image store: list, import, inspect, pull, rm, gc",
		Long: `Images are read-only directory trees in the state directory's store,
content-addressed: identical content is stored once however many names and VMs
use it, and each VM is given only its own image. A VM's image: names a store
image ("base") or an OCI reference, pulled on first use.`,
		Example: "  microvm image list\n  microvm image pull docker.io/library/nginx:1.27\n  microvm image gc -f infra.yaml",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usageError{fmt.Errorf("image needs a subcommand: list, import, inspect, pull, rm or gc")}
		},
	}
	var jobs int
	var entrypoint, cmdArgs, env []string
	var workdir, user, stopSignal string
	var trust bool
	var keys []string
	var identity config.Identity
	var trustedRoot string
	cmd.PersistentFlags().IntVar(&jobs, "jobs", 8, "layers fetched at once")
	importCmd := &cobra.Command{
		Use:   "import NAME SRC",
		Short: "Import a directory, rootfs tarball, docker save archive or OCI layout as NAME",
		Example: "  microvm image import base /srv/rootfs\n  microvm image import app app.tar      # docker save app:1 > app.tar\n" +
			"  microvm image import web ./oci-layout\n  microvm image import web ./rootfs --entrypoint /bin/busybox,httpd,-f,-p,8080",
		Args: exactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			var over *store.Config
			if stopSignal != "" {
				if _, err := guest.ParseSignal(stopSignal); err != nil {
					return usageError{fmt.Errorf("--stop-signal: %w", err)}
				}
			}
			if len(entrypoint)+len(cmdArgs)+len(env) > 0 || workdir != "" || user != "" || stopSignal != "" {
				over = &store.Config{Entrypoint: entrypoint, Cmd: cmdArgs, Env: env, WorkingDir: workdir, User: user, StopSignal: stopSignal}
			}
			return a.imageFetch(args[0], func(ctx context.Context, s *store.Store, o store.Options) (store.Image, error) {
				o.Config, o.Trust = over, trust
				return s.Import(ctx, args[0], args[1], o)
			}, jobs)
		},
	}
	importCmd.Flags().StringSliceVar(&entrypoint, "entrypoint", nil, "the image's entrypoint, comma-separated argv (directories and tarballs have none)")
	importCmd.Flags().StringSliceVar(&cmdArgs, "cmd", nil, "the image's default arguments, comma-separated")
	importCmd.Flags().StringArrayVar(&env, "env", nil, "an environment variable KEY=VALUE of the image (repeatable)")
	importCmd.Flags().StringVar(&workdir, "workdir", "", "the image's working directory")
	importCmd.Flags().StringVar(&user, "user", "", "the user the image runs as (name, uid, uid:gid or name:group)")
	importCmd.Flags().StringVar(&stopSignal, "stop-signal", "", "the signal the workload is sent first when its VM stops (default SIGTERM)")
	importCmd.Flags().BoolVar(&trust, "trust", false, "record the image as trusted: a VM whose imagePolicy asks for signatures may boot it unsigned")
	pullCmd := &cobra.Command{
		Use:   "pull REF",
		Short: "Pull an image from its registry (credentials from ~/.docker/config.json)",
		Long: `pull fetches REF's layers into the store. With --key, the image must first
carry a valid cosign signature by one of the keys (as a VM's imagePolicy asks);
with --certificate-identity and --certificate-oidc-issuer (or their -regexp
forms) and --trusted-root, a signature made with a certificate naming that
identity, from an authority of the trusted root (cosign's keyless signing).
Else nothing is fetched and the error says which signature was missing or wrong.`,
		Example: "  microvm image pull docker.io/library/nginx:1.27\n  microvm image pull --key /etc/microvm/cosign.pub registry.example/app:1\n" +
			"  microvm image pull --trusted-root /etc/microvm/trusted_root.json --certificate-oidc-issuer https://token.actions.githubusercontent.com \\\n" +
			"    --certificate-identity-regexp '^https://github.com/example/app/' registry.example/app:1",
		Args: exactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			pol := config.ImagePolicy{Keys: keys, TrustedRoot: trustedRoot}
			if identity != (config.Identity{}) {
				pol.Identities = []config.Identity{identity}
			}
			var verify store.VerifyFunc
			if pol.Enforced() {
				var err error
				if verify, err = launch.Verification(pol); err != nil {
					return usageError{fmt.Errorf("--key, --certificate-identity: %w", err)}
				}
			} else if trustedRoot != "" {
				return usageError{fmt.Errorf("--trusted-root needs --certificate-identity (or -regexp) and --certificate-oidc-issuer (or -regexp)")}
			}
			return a.imageFetch(args[0], func(ctx context.Context, s *store.Store, o store.Options) (store.Image, error) {
				o.Verify = verify
				return s.Pull(ctx, args[0], o)
			}, jobs)
		},
	}
	pullCmd.Flags().StringArrayVar(&keys, "key", nil, "a cosign public key file (PEM) the image must be signed by (repeatable: any one)")
	pullCmd.Flags().StringVar(&identity.Subject, "certificate-identity", "", "the subject (email or URI) of the certificate the image must be signed with")
	pullCmd.Flags().StringVar(&identity.SubjectRegExp, "certificate-identity-regexp", "", "a regular expression the signing certificate's subject must match")
	pullCmd.Flags().StringVar(&identity.Issuer, "certificate-oidc-issuer", "", "the OIDC issuer named in the signing certificate")
	pullCmd.Flags().StringVar(&identity.IssuerRegExp, "certificate-oidc-issuer-regexp", "", "a regular expression the signing certificate's OIDC issuer must match")
	pullCmd.Flags().StringVar(&trustedRoot, "trusted-root", "", "a sigstore trusted_root.json whose authorities the signing certificate must come from")
	cmd.AddCommand(
		&cobra.Command{
			Use:     "list",
			Short:   "List images: name, id, size, VMs using it",
			Example: "  microvm image list\n  microvm image list -o json",
			Args:    exactArgs(0),
			RunE:    func(*cobra.Command, []string) error { return a.imageList() },
		},
		importCmd,
		&cobra.Command{
			Use:     "inspect NAME",
			Short:   "Show how an image runs: entrypoint, cmd, env, user, workdir, ports, volumes, stop signal",
			Example: "  microvm image inspect docker.io/library/nginx:1.27\n  microvm image inspect base -o json",
			Args:    exactArgs(1),
			RunE:    func(_ *cobra.Command, args []string) error { return a.imageInspect(args[0]) },
		},
		pullCmd,
		&cobra.Command{
			Use:     "rm NAME",
			Short:   "Remove an image's name (refused while a VM uses it); gc frees the space",
			Example: "  microvm image rm web",
			Args:    exactArgs(1),
			RunE: func(_ *cobra.Command, args []string) error {
				users, err := a.imageUsers()
				if err != nil {
					return err
				}
				if vms := users[args[0]]; len(vms) > 0 {
					return fmt.Errorf("image %q is used by %s", args[0], strings.Join(vms, ", "))
				}
				return store.Open(a.stateDir).Remove(args[0])
			},
		},
		a.imageGCCommand(),
	)
	return cmd
}

func (a *app) imageGCCommand() *cobra.Command {
	var file string
	var keep []string
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Remove images no VM uses, and their unreferenced trees and layers",
		Long: `gc keeps every image a VM of this state directory uses (its run record),
every image named in --file and every --keep NAME, and removes the other names,
then every tree, cached layer and temporary directory no remaining name
references. Plain directories put in the store by hand are kept.`,
		Example: "  microvm image gc -f /etc/microvm/infra.yaml",
		Args:    exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			users, err := a.imageUsers()
			if err != nil {
				return err
			}
			keepSet := map[string]bool{}
			for name := range users {
				keepSet[name] = true
			}
			for _, k := range keep {
				keepSet[k] = true
			}
			if file != "" {
				cfg, err := a.load(file, true)
				if err != nil {
					return err
				}
				for _, vm := range cfg.VMs {
					keepSet[vm.Image] = true
				}
			}
			res, err := store.Open(a.stateDir).GC(keepSet)
			if err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(res)
			}
			fmt.Fprintf(a.stdout, "removed %d name(s), %d tree(s), %d layer(s); freed %s\n", len(res.Names), len(res.Trees), res.Blobs, humanBytes(res.FreedBytes))
			for _, n := range res.Names {
				fmt.Fprintf(a.stdout, "  %s\n", n)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "also keep the images this config file uses")
	cmd.Flags().StringSliceVar(&keep, "keep", nil, "also keep these image names")
	return cmd
}

// imageUsers maps each image name to the VMs (run records) using it.
func (a *app) imageUsers() (map[string][]string, error) {
	recs, err := state.Dir{Root: a.stateDir}.RunRecords()
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, r := range recs {
		out[r.Spec.Image] = append(out[r.Spec.Image], r.Name)
	}
	return out, nil
}

// imageInspect prints the config a VM with this image runs (what its own
// command, env, workdir and user override).
func (a *app) imageInspect(name string) error {
	img, err := store.Open(a.stateDir).Get(name)
	if err != nil {
		return err
	}
	if a.output == "json" {
		return a.printJSON(img)
	}
	c := img.Config
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 1, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, dash(v)) }
	list := func(vs []string) string {
		if len(vs) == 0 {
			return ""
		}
		return vmm.ShellQuote(vs)
	}
	row("name", img.Name)
	row("id", img.ID)
	row("source", img.Source)
	row("size", humanBytes(img.Size))
	row("entrypoint", list(c.Entrypoint))
	row("cmd", list(c.Cmd))
	row("user", c.User)
	row("workdir", c.WorkingDir)
	row("ports", strings.Join(c.ExposedPorts, " "))
	row("volumes", strings.Join(c.Volumes, " "))
	row("stop signal", c.StopSignal)
	row("env", strings.Join(c.Env, "\n\t"))
	return tw.Flush()
}

func (a *app) imageList() error {
	imgs, err := store.Open(a.stateDir).List()
	if err != nil {
		return err
	}
	users, err := a.imageUsers()
	if err != nil {
		return err
	}
	type row struct {
		store.Image
		VMs []string `json:"vms"`
	}
	rows := make([]row, 0, len(imgs))
	for _, img := range imgs {
		vms := users[img.Name]
		sort.Strings(vms)
		rows = append(rows, row{img, append([]string{}, vms...)})
	}
	if a.output == "json" {
		return a.printJSON(rows)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tID\tSIZE\tVMS")
	for _, r := range rows {
		vms := strings.Join(r.VMs, ",")
		if vms == "" {
			vms = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Name, short(r.ID), humanBytes(r.Size), vms)
	}
	return tw.Flush()
}

// imageFetch runs an import or pull with progress on stderr and Ctrl-C
// cancelling it (nothing partial stays visible).
func (a *app) imageFetch(label string, do func(context.Context, *store.Store, store.Options) (store.Image, error), jobs int) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	p := newProgress(a.stderr, label)
	t0 := time.Now()
	img, err := do(ctx, store.Open(a.stateDir), store.Options{Jobs: jobs, Progress: p.event})
	p.done()
	if err != nil {
		return err
	}
	if a.output == "json" {
		return a.printJSON(img)
	}
	fmt.Fprintf(a.stdout, "%s: %s, %s, in %s\n", img.Name, short(img.ID), humanBytes(img.Size), time.Since(t0).Round(time.Millisecond))
	return nil
}

// progress shows a one-line bar on a terminal, plain lines otherwise.
type progress struct {
	w        io.Writer
	tty      bool
	label    string
	fetched  int
	unpacked int
	layers   int
	bytes    int64
}

func newProgress(w io.Writer, label string) *progress {
	p := &progress{w: w, label: label}
	if f, ok := w.(*os.File); ok {
		p.tty = term.IsTerminal(int(f.Fd()))
	}
	return p
}

func (p *progress) event(e store.Event) {
	p.layers = e.Layers
	switch e.Kind {
	case "fetched", "cached":
		p.fetched++
		p.bytes += e.Bytes
	case "unpacked":
		p.unpacked++
	case "exists":
		fmt.Fprintf(p.w, "%s: already in the store, nothing to fetch\n", p.label)
		return
	}
	if !p.tty {
		what := map[string]string{"fetched": "fetched", "cached": "already cached", "unpacked": "unpacked"}[e.Kind]
		detail := ""
		if e.Bytes > 0 {
			detail = " (" + humanBytes(e.Bytes) + ")"
		}
		fmt.Fprintf(p.w, "%s: layer %d/%d %s%s\n", p.label, e.Layer, e.Layers, what, detail)
		return
	}
	const width = 30
	filled := 0
	if p.layers > 0 {
		filled = width * p.unpacked / p.layers
	}
	fmt.Fprintf(p.w, "\r%s [%s%s] fetched %d/%d, unpacked %d/%d, %s", p.label,
		strings.Repeat("=", filled), strings.Repeat(" ", width-filled), p.fetched, p.layers, p.unpacked, p.layers, humanBytes(p.bytes))
}

func (p *progress) done() {
	if p.tty && p.layers > 0 {
		fmt.Fprintln(p.w)
	}
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
