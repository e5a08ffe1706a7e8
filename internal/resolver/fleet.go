package resolver

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"

	"microvm.dev/microvm/internal/config"
)

// ForFleet keeps a server answering for cfg in the network namespace
// netns: every VM's name and addresses (A and AAAA), on every VM's
// gateway addresses (IPv4 and IPv6), forwarding to
// host.dns or else the host's own resolvers. It updates s when the domain
// and upstreams are unchanged, else replaces it (s nil: the first); the
// server it returns serves even when the error reports a gateway it could
// not listen on.
func ForFleet(s *Server, cfg *config.Config, netns string, log *slog.Logger) (*Server, error) {
	vms := map[string][]netip.Addr{}
	var gateways []netip.Addr
	for _, vm := range cfg.VMs {
		vms[vm.Name] = vm.Net.Addrs()
		gateways = append(gateways, vm.Net.Gateways()...)
	}
	var upstreams []string
	if len(cfg.Host.DNS) > 0 {
		for _, d := range cfg.Host.DNS {
			u, err := Upstream(d)
			if err != nil {
				return s, fmt.Errorf("host.dns: %w", err)
			}
			upstreams = append(upstreams, u)
		}
	} else {
		var err error
		if upstreams, err = HostUpstreams(HostResolvConf, gateways); err != nil {
			log.Warn("the VMs' DNS forwards nothing", "err", err)
		}
	}
	if s != nil && (s.opts.Domain != dnsName(cfg.Domain) || !slices.Equal(s.opts.Upstreams, upstreams)) {
		s.Close()
		s = nil
	}
	if s == nil {
		var err error
		if s, err = New(Options{Domain: cfg.Domain, Upstreams: upstreams, NetNS: netns, Log: log}); err != nil {
			return nil, err
		}
	}
	return s, s.Update(vms, gateways)
}
