package hostnet

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"microvm.dev/microvm/internal/config"
)

// ErrNoDefaultRoute is returned when "auto" must find the uplink and the
// network namespace has no IPv4 default route.
var ErrNoDefaultRoute = errors.New("no IPv4 default route, so the uplink cannot be found automatically; set host.externalInterface")

// DefaultRouteInterface names the interface of the IPv4 default route.
func (h *Host) DefaultRouteInterface() (string, error) {
	routes, err := h.nl.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return "", fmt.Errorf("list routes: %w", err)
	}
	best := -1
	var bestRoute netlink.Route
	for _, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		if r.LinkIndex == 0 {
			continue
		}
		if best < 0 || r.Priority < best {
			best, bestRoute = r.Priority, r
		}
	}
	if best < 0 {
		return "", ErrNoDefaultRoute
	}
	link, err := h.nl.LinkByIndex(bestRoute.LinkIndex)
	if err != nil {
		return "", fmt.Errorf("default route interface %d: %w", bestRoute.LinkIndex, err)
	}
	return link.Attrs().Name, nil
}

// DefaultGateway is the next hop of the IPv4 default route, if it has one.
func (h *Host) DefaultGateway() (string, error) {
	routes, err := h.nl.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return "", fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		if r.Gw != nil {
			return r.Gw.String(), nil
		}
	}
	return "", ErrNoDefaultRoute
}

// ResolveUplink returns the uplink the config names, finding it from the
// default route for "auto" and checking that it exists otherwise.
func (h *Host) ResolveUplink(hc config.Host) (string, error) {
	if hc.ExternalInterface == "" || hc.ExternalInterface == config.DefaultExternalInterface {
		return h.DefaultRouteInterface()
	}
	if _, err := h.nl.LinkByName(hc.ExternalInterface); err != nil {
		return "", fmt.Errorf("host.externalInterface %q: no such interface on this host", hc.ExternalInterface)
	}
	return hc.ExternalInterface, nil
}

// Addrs lists the namespace's IPv4 addresses with their interfaces.
func (h *Host) Addrs() ([]config.HostAddr, error) {
	o, err := h.observe()
	if err != nil {
		return nil, err
	}
	var out []config.HostAddr
	for idx, addrs := range o.addrs {
		for _, a := range addrs {
			if p, ok := prefixOf(a); ok {
				out = append(out, config.HostAddr{Interface: linkName(o, idx), Prefix: p})
			}
		}
	}
	return out, nil
}

// HostOptions are the facts of this namespace that validation checks a file
// against: its addresses, and the given CPU count.
func (h *Host) HostOptions(cpus int) (config.Options, error) {
	addrs, err := h.Addrs()
	if err != nil {
		return config.Options{}, err
	}
	return config.Options{HostCPUs: cpus, HostAddrs: addrs}, nil
}
