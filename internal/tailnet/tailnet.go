// Package tailnet keeps the host's Tailscale subnet routes equal to the VM
// subnets, through the tailscale command line (the supported interface to
// tailscaled): `tailscale status --json` to see whether the node is on its
// tailnet and which of its routes the tailnet approved, `tailscale debug
// prefs` to read what is advertised and `tailscale set --advertise-routes=…`
// to change it.
package tailnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"microvm.dev/microvm/internal/state"
)

// ErrNoTailscale says the tailscale command is not installed.
var ErrNoTailscale = errors.New("the tailscale command is not installed, so the VM subnets are not advertised on the tailnet (install Tailscale: https://tailscale.com/download/linux)")

// ErrNotRunning says tailscaled answers but is not on a tailnet (logged
// out, or still starting): routes are not set then, so that the first
// `tailscale up` is not refused for leaving them out.
var ErrNotRunning = errors.New("tailscaled is not logged in to a tailnet")

// Client runs the tailscale command.
type Client struct {
	// Bin is the command (default "tailscale", looked up in PATH).
	Bin string
	// Socket is tailscaled's LocalAPI socket (default: the command's own,
	// /var/run/tailscale/tailscaled.sock).
	Socket string
}

// WithSocket is c talking to the tailscaled at socket ("" keeps c's).
func (c Client) WithSocket(socket string) Client {
	if socket != "" {
		c.Socket = socket
	}
	return c
}

func (c Client) bin() (string, error) {
	b := c.Bin
	if b == "" {
		b = "tailscale"
	}
	p, err := exec.LookPath(b)
	if err != nil {
		return "", ErrNoTailscale
	}
	return p, nil
}

func (c Client) run(ctx context.Context, args ...string) ([]byte, error) {
	bin, err := c.bin()
	if err != nil {
		return nil, err
	}
	if c.Socket != "" {
		args = append([]string{"--socket=" + c.Socket}, args...)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("tailscale %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(ee.Stderr)))
		}
		return nil, fmt.Errorf("tailscale %s: %w", strings.Join(args, " "), err)
	}
	return out, nil
}

// Node is what tailscaled says of the host's node.
type Node struct {
	// BackendState is "Running" on a tailnet; "NeedsLogin", "Stopped",
	// "Starting" … otherwise.
	BackendState string
	// TUN says tailscaled has its TUN device (false: userspace networking).
	TUN bool
	// Addrs are the node's tailnet addresses.
	Addrs []netip.Addr
	// Approved are the subnet routes the tailnet approved and routes
	// through this node, sorted.
	Approved []string
}

// Status reads the node's state.
func (c Client) Status(ctx context.Context) (Node, error) {
	out, err := c.run(ctx, "status", "--json")
	if err != nil {
		return Node{}, err
	}
	var st struct {
		BackendState string
		TUN          bool
		Self         *struct {
			TailscaleIPs  []netip.Addr
			PrimaryRoutes []string
		}
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return Node{}, fmt.Errorf("tailscale status --json: %w", err)
	}
	n := Node{BackendState: st.BackendState, TUN: st.TUN}
	if st.Self != nil {
		n.Addrs = st.Self.TailscaleIPs
		n.Approved = Routes(parse(st.Self.PrimaryRoutes))
	}
	return n, nil
}

func parse(routes []string) []netip.Prefix {
	var out []netip.Prefix
	for _, r := range routes {
		if p, err := netip.ParsePrefix(r); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// Advertised returns the routes the node advertises, sorted.
func (c Client) Advertised(ctx context.Context) ([]string, error) {
	out, err := c.run(ctx, "debug", "prefs")
	if err != nil {
		return nil, err
	}
	var prefs struct {
		AdvertiseRoutes []string `json:"AdvertiseRoutes"`
	}
	if err := json.Unmarshal(out, &prefs); err != nil {
		return nil, fmt.Errorf("tailscale debug prefs: %w", err)
	}
	return Routes(parse(prefs.AdvertiseRoutes)), nil
}

// Sync makes the advertised routes subnets, keeping every route of the
// node's that microvm does not own (an exit node's 0.0.0.0/0 and ::/0, a
// LAN the admin advertises by hand): owned says which are microvm's (nil:
// NotExit, as when no record is kept). It does so once the node is on its
// tailnet (ErrNotRunning before) and reports whether it changed anything.
func (c Client) Sync(ctx context.Context, subnets []netip.Prefix, owned func(route string) bool) (bool, error) {
	st, err := c.Status(ctx)
	if err != nil {
		return false, err
	}
	if st.BackendState != "Running" {
		return false, fmt.Errorf("%w (its state is %s): log it in with `tailscale up`; microvm then advertises the VM subnets itself", ErrNotRunning, st.BackendState)
	}
	have, err := c.Advertised(ctx)
	if err != nil {
		return false, err
	}
	if owned == nil {
		owned = NotExit
	}
	want := Routes(subnets)
	for _, r := range have {
		if !owned(r) {
			want = append(want, r)
		}
	}
	want = Routes(parse(want))
	if slices.Equal(have, want) {
		return false, nil
	}
	if _, err := c.run(ctx, "set", "--advertise-routes="+strings.Join(want, ",")); err != nil {
		return false, err
	}
	return true, nil
}

// NotExit says route is not an exit node's: without a record, every
// other route counts as microvm's (as before there was one).
func NotExit(route string) bool { return !ExitRoute(route) }

// ExitRoute says route is an exit node's (0.0.0.0/0 or ::/0), which
// `tailscale set --advertise-exit-node` keeps among the advertised routes.
func ExitRoute(route string) bool {
	return route == "0.0.0.0/0" || route == "::/0"
}

// Missing are the routes of want that have lacks, in want's order: those
// not advertised, or (against the approved ones) not approved.
func Missing(want, have []string) []string {
	var out []string
	for _, r := range want {
		if !slices.Contains(have, r) {
			out = append(out, r)
		}
	}
	return out
}

// Routes are subnets as tailscale spells them, sorted.
func Routes(subnets []netip.Prefix) []string {
	out := make([]string, 0, len(subnets))
	for _, s := range subnets {
		out = append(out, s.Masked().String())
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// OwnedFile is where the daemon records the routes it advertised, under
// its state directory.
func OwnedFile(stateDir string) string { return filepath.Join(stateDir, "tailnet-routes.json") }

// Owned says which routes microvm advertised, by the record in stateDir;
// NotExit when there is none yet.
func Owned(stateDir string) (func(route string) bool, error) {
	var rec struct{ Routes []string }
	if err := state.ReadJSON(OwnedFile(stateDir), &rec); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return NotExit, nil
		}
		return nil, err
	}
	return func(r string) bool { return slices.Contains(rec.Routes, r) }, nil
}

// SaveOwned records routes as the ones microvm advertises.
func SaveOwned(stateDir string, routes []string) error {
	return state.WriteJSON(OwnedFile(stateDir), struct{ Routes []string }{routes})
}
