package daemon

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"time"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/tailnet"
)

// How often the daemon re-checks the advertised routes: soon while
// tailscaled is missing, down or logged out (it may start after the
// daemon, or be logged in later), seldom once they are right (a tailscaled
// restarted with other settings is put right again).
const (
	tailnetRetry = 5 * time.Second
	tailnetCheck = time.Minute
)

// tailnetKeeper keeps the host's advertised Tailscale routes equal to the
// applied file's VM subnets, at every apply and between applies, leaving
// the routes that are not microvm's (an exit node's, a LAN's) as they are;
// which are microvm's it records in the state directory.
type tailnetKeeper struct {
	mu      sync.Mutex // one sync at a time
	client  tailnet.Client
	subnets []netip.Prefix
	on      bool
	lastErr string
	poke    chan struct{}
}

// want sets what the routes should be from cfg (client's Bin kept, its
// socket the file's).
func (k *tailnetKeeper) want(base tailnet.Client, cfg *config.Config) {
	var subnets []netip.Prefix
	for _, vm := range cfg.VMs {
		subnets = append(subnets, vm.Net.Subnets()...)
	}
	k.mu.Lock()
	k.client = base.WithSocket(cfg.Host.Tailscale.Socket)
	k.subnets, k.on = subnets, cfg.Host.Tailscale.AdvertiseRoutes
	k.mu.Unlock()
}

// sync advertises the wanted routes once; an error is logged when it is
// new, and the routes when they change.
func (k *tailnetKeeper) sync(d *Daemon) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.on {
		return nil
	}
	owned, err := tailnet.Owned(d.env.StateDir)
	if err != nil {
		d.log.Warn("tailscale routes: the record of microvm's routes", "err", err)
		return err
	}
	changed, err := k.client.Sync(context.Background(), k.subnets, owned)
	if err == nil {
		err = tailnet.SaveOwned(d.env.StateDir, tailnet.Routes(k.subnets))
	}
	switch {
	case err != nil:
		if err.Error() != k.lastErr {
			d.log.Warn("tailscale routes", "err", err, "retry", tailnetRetry)
		}
		k.lastErr = err.Error()
		return err
	case changed || k.lastErr != "":
		d.log.Info("tailscale routes advertised", "routes", strings.Join(tailnet.Routes(k.subnets), ","))
	}
	k.lastErr = ""
	return nil
}

// run re-syncs until the daemon stops: tailnetRetry after a failure,
// tailnetCheck after a success, and at once when poked.
func (k *tailnetKeeper) run(d *Daemon) {
	t := time.NewTimer(tailnetCheck)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-k.poke:
		case <-t.C:
		}
		next := tailnetCheck
		if err := k.sync(d); err != nil {
			next = tailnetRetry
		}
		t.Reset(next)
	}
}

// syncTailnet advertises the VM subnets, IPv4 and IPv6, for cfg, and has
// the keeper hold them there. A failure (no tailscale installed, tailscaled
// down or logged out) is reported in the result, never fails the apply:
// the VMs do not need it, and the keeper retries.
func (d *Daemon) syncTailnet(cfg *config.Config, res *ApplyResult) {
	d.tailnet.want(d.Tailscale, cfg)
	if err := d.tailnet.sync(d); err != nil {
		res.Warnings = append(res.Warnings, "tailscale: "+err.Error()+" (retried every "+tailnetRetry.String()+")")
		select {
		case d.tailnet.poke <- struct{}{}:
		default:
		}
	}
}
