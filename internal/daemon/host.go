package daemon

import (
	"errors"

	"microvm.dev/microvm/internal/apitypes"

	"microvm.dev/microvm/internal/store"
	"microvm.dev/microvm/internal/verify"
)

// HostInfo is the host as the web console shows it: its microvm
// interfaces and loaded table, the ruleset the applied file renders (as
// `microvm render nftables` prints it) and the images in the store.
type HostInfo = apitypes.HostInfo

// ErrNoFile says no file has been applied yet.
var ErrNoFile = errors.New("no file is applied yet")

// Host reports the host against the applied file.
func (d *Daemon) Host() (*HostInfo, error) {
	cfg := d.applied()
	if cfg == nil {
		return nil, ErrNoFile
	}
	st, err := d.net.Show(cfg)
	if err != nil {
		return nil, err
	}
	rs, _, _, err := d.net.Ruleset(cfg)
	if err != nil {
		return nil, err
	}
	imgs, err := store.Open(d.env.StateDir).List()
	if err != nil {
		return nil, err
	}
	if imgs == nil {
		imgs = []store.Image{}
	}
	return &HostInfo{Network: st, Firewall: rs.Script(), Images: imgs, Memory: d.MemoryState()}, nil
}

// Recipients are the public side of the daemon's age identities.
func (d *Daemon) Recipients() apitypes.Recipients {
	out := apitypes.Recipients{Recipients: []string{}}
	for _, id := range d.env.Identities {
		out.Recipients = append(out.Recipients, id.Recipient)
	}
	return out
}

// MemoryState is the host's memory as the daemon sees it: available,
// short (host.reclaim), and its samepage merging's counters.
func (d *Daemon) MemoryState() apitypes.HostMemoryState {
	short, avail, _ := d.Short()
	m := apitypes.HostMemoryState{AvailableBytes: avail, Short: short}
	if st, err := d.ksm.Stats(); err == nil {
		m.KSM = &st
	}
	return m
}

// Checks runs `microvm doctor` and `microvm verify` for the applied file
// (the host's prerequisites, then the live fleet), each result with its
// evidence or fix.
func (d *Daemon) Checks() ([]verify.Result, error) {
	cfg := d.applied()
	if cfg == nil {
		return nil, ErrNoFile
	}
	checks := verify.Doctor(d.env, nil)
	checks = append(checks, verify.Prerequisites(cfg, d.env, nil)...)
	checks = append(checks, verify.Live(verify.Fleet{Config: cfg, StateDir: d.env.StateDir, NetNS: d.env.NetNS, Status: d.Status, Tailscale: d.Tailscale})...)
	return verify.Run(checks), nil
}
