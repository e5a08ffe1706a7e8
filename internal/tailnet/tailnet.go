// Package tailnet keeps the host's Tailscale subnet routes equal to the VM
// subnets, through the tailscale command line (the supported interface to
// tailscaled): `tailscale debug prefs` to read what is advertised and
// `tailscale set --advertise-routes=…` to change it.
package tailnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"time"
)

// ErrNoTailscale says the tailscale command is not installed.
var ErrNoTailscale = errors.New("the tailscale command is not installed, so the VM subnets are not advertised on the tailnet (install Tailscale: https://tailscale.com/download/linux)")

// Client runs the tailscale command.
type Client struct {
	// Bin is the command (default "tailscale", looked up in PATH).
	Bin string
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
	routes := append([]string{}, prefs.AdvertiseRoutes...)
	slices.Sort(routes)
	return routes, nil
}

// Sync makes the advertised routes exactly subnets; it reports whether it
// changed anything.
func (c Client) Sync(ctx context.Context, subnets []netip.Prefix) (bool, error) {
	want := Routes(subnets)
	have, err := c.Advertised(ctx)
	if err != nil {
		return false, err
	}
	if slices.Equal(have, want) {
		return false, nil
	}
	if _, err := c.run(ctx, "set", "--advertise-routes="+strings.Join(want, ",")); err != nil {
		return false, err
	}
	return true, nil
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
