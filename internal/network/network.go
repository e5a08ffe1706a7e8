// Package network makes a host's (or a network namespace's) networking match
// a config: the nftables table first, so isolation holds before any VM link
// comes up, then the bridges and TAPs. Each part measures before it acts, so
// applying twice changes nothing the second time.
package network

import (
	"errors"
	"fmt"

	"microvm.dev/microvm/internal/apitypes"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/firewall"
	"microvm.dev/microvm/internal/hostnet"
)

// Result says what an apply or teardown did.
type Result = apitypes.NetworkResult

// Manager applies configs to one namespace.
type Manager struct {
	host *hostnet.Host
	fw   *firewall.Applier
	opts hostnet.Options
	// tapOwners, when set, gives VMs' TAPs owners of their own (OwnTAPs).
	tapOwners func(cfg *config.Config, allocate bool) (map[string]hostnet.Owner, error)
}

// OwnTAPs makes f decide, at every apply (allocate set) and plan, which
// VMs' TAPs have an owner of their own (hostnet.Options.TAPOwners):
// hypervisors that open their TAP by name and run as an id of their own
// (launch.Env.TAPOwners).
func (m *Manager) OwnTAPs(f func(cfg *config.Config, allocate bool) (map[string]hostnet.Owner, error)) {
	m.tapOwners = f
}

// New returns a Manager for the namespace at nsPath ("" for the process's own).
func New(nsPath string, opts hostnet.Options) (*Manager, error) {
	h, err := hostnet.Open(nsPath)
	if err != nil {
		return nil, err
	}
	return &Manager{host: h, fw: &firewall.Applier{NetNS: nsPath}, opts: opts}, nil
}

// Close releases the Manager.
func (m *Manager) Close() { m.host.Close() }

// Host is the namespace handle.
func (m *Manager) Host() *hostnet.Host { return m.host }

// Ruleset renders cfg's ruleset for this namespace (resolving the uplink).
func (m *Manager) Ruleset(cfg *config.Config) (firewall.Ruleset, string, []string, error) {
	var warnings []string
	uplink, err := m.host.ResolveUplink(cfg.Host)
	switch {
	case errors.Is(err, hostnet.ErrNoDefaultRoute):
		warnings = append(warnings, err.Error()+"; VMs get no NAT")
	case err != nil:
		return firewall.Ruleset{}, "", nil, err
	}
	return firewall.Render(cfg, firewall.Options{Uplink: uplink}), uplink, warnings, nil
}

// Apply makes the namespace's network match cfg.
func (m *Manager) Apply(cfg *config.Config) (*Result, error) {
	rs, uplink, warnings, err := m.Ruleset(cfg)
	if err != nil {
		return nil, err
	}
	res := &Result{Uplink: uplink, Hash: rs.Hash, Warnings: warnings, Links: []hostnet.Change{}}
	// The firewall goes in after the conflict check and before any link
	// changes, so a refused apply changes nothing and isolation holds before
	// a VM link comes up.
	opts, err := m.options(cfg, true)
	if err != nil {
		return nil, err
	}
	opts.BeforeChanges = func() error {
		var err error
		if res.Firewall, err = m.fw.Apply(rs); err != nil {
			return fmt.Errorf("firewall: %w", err)
		}
		return nil
	}
	if hasIPv6(cfg) && !m.host.IPv6() {
		res.Warnings = append(res.Warnings, "this host has no IPv6 (booted with ipv6.disable=1?): the VMs' networks are IPv4 only; set host.ipv6Prefix: none to say so")
	}
	links, err := m.host.Reconcile(hostnet.LinksFor(cfg), opts)
	res.Links = append(res.Links, links...)
	if err != nil {
		var ce *hostnet.ConflictError
		if errors.As(err, &ce) {
			return res, err
		}
		return res, fmt.Errorf("apply network: %w", err)
	}
	if err := m.keepRA(uplink, cfg, false, res); err != nil {
		return res, err
	}
	return res, nil
}

// keepRA keeps the uplink's SLAAC once IPv6 forwarding is on (a dry run
// says whether it would), recording the change in res.
func (m *Manager) keepRA(uplink string, cfg *config.Config, dry bool, res *Result) error {
	if uplink == "" || !hasIPv6(cfg) {
		return nil
	}
	changed, err := m.host.KeepRAWithForwarding(uplink, dry)
	if changed {
		res.Links = append(res.Links, hostnet.Change{Op: "set-sysctl", Target: "net.ipv6.conf." + uplink + ".accept_ra=2"})
	}
	return err
}

// options are the reconcile's options for cfg: the TAPs' owners, given
// ids where allocate says (a plan allocates none).
func (m *Manager) options(cfg *config.Config, allocate bool) (hostnet.Options, error) {
	opts := m.opts
	if m.tapOwners != nil {
		var err error
		if opts.TAPOwners, err = m.tapOwners(cfg, allocate); err != nil {
			return opts, err
		}
	}
	return opts, nil
}

// Plan lists the link changes an Apply of cfg would make now (a dry run
// of the reconcile: nothing is changed, no id allocated). A conflict is
// the error Apply would return.
func (m *Manager) Plan(cfg *config.Config) ([]hostnet.Change, error) {
	opts, err := m.options(cfg, false)
	if err != nil {
		return nil, err
	}
	opts.DryRun = true
	links, err := m.host.Reconcile(hostnet.LinksFor(cfg), opts)
	if err != nil {
		return links, err
	}
	uplink, err := m.host.ResolveUplink(cfg.Host)
	if errors.Is(err, hostnet.ErrNoDefaultRoute) {
		return links, nil // no NAT: nothing to keep
	} else if err != nil {
		return links, err
	}
	res := &Result{Links: links}
	err = m.keepRA(uplink, cfg, true, res)
	return res.Links, err
}

func hasIPv6(cfg *config.Config) bool {
	for _, vm := range cfg.VMs {
		if vm.Net.HasIPv6() {
			return true
		}
	}
	return false
}

// Teardown removes microvm's interfaces and table from the namespace.
func (m *Manager) Teardown() (*Result, error) {
	res := &Result{Links: []hostnet.Change{}}
	links, err := m.host.Teardown()
	res.Links = append(res.Links, links...)
	if err != nil {
		return res, fmt.Errorf("interfaces: %w", err)
	}
	if res.Firewall, err = m.fw.Remove(); err != nil {
		return res, fmt.Errorf("firewall: %w", err)
	}
	return res, nil
}

// Status is the observed network of the namespace against a config.
type Status = apitypes.NetworkStatus

// Show reports the namespace's microvm interfaces and table, and whether
// they match cfg.
func (m *Manager) Show(cfg *config.Config) (*Status, error) {
	rs, uplink, warnings, err := m.Ruleset(cfg)
	if err != nil {
		return nil, err
	}
	links, err := m.host.Show()
	if err != nil {
		return nil, err
	}
	loaded, err := m.fw.Loaded()
	if err != nil {
		return nil, err
	}
	st := &Status{Uplink: uplink, Links: links, Loaded: loaded, WantHash: rs.Hash, Warnings: warnings}
	if st.Links == nil {
		st.Links = []hostnet.LinkState{}
	}
	up := map[string]bool{}
	for _, l := range links {
		up[l.Name] = l.Up
	}
	for _, vm := range cfg.VMs {
		if !up[vm.Net.Bridge] || !up[vm.Net.TAP] {
			st.MissingVMs = append(st.MissingVMs, vm.Name)
		}
	}
	st.InSync = rs.Matches(loaded) && len(st.MissingVMs) == 0 && len(links) == 2*len(cfg.VMs)
	return st, nil
}
