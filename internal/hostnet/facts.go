package hostnet

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"microvm.dev/microvm/internal/config"
)

// ErrNoDefaultRoute is returned when "auto" must find the uplink and the
// network namespace has no IPv4 default route.
var ErrNoDefaultRoute = errors.New("no IPv4 default route, so the uplink cannot be found automatically; set host.externalInterface")

// DefaultRouteInterface names the interface of the IPv4 default route.
func DefaultRouteInterface() (string, error) {
	routes, err := netlink.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
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
	link, err := netlink.LinkByIndex(bestRoute.LinkIndex)
	if err != nil {
		return "", fmt.Errorf("default route interface %d: %w", bestRoute.LinkIndex, err)
	}
	return link.Attrs().Name, nil
}

// ResolveUplink returns the uplink the config names, finding it from the
// default route for "auto" and checking that it exists otherwise.
func ResolveUplink(h config.Host) (string, error) {
	if h.ExternalInterface == "" || h.ExternalInterface == config.DefaultExternalInterface {
		return DefaultRouteInterface()
	}
	if _, err := netlink.LinkByName(h.ExternalInterface); err != nil {
		return "", fmt.Errorf("host.externalInterface %q: no such interface on this host", h.ExternalInterface)
	}
	return h.ExternalInterface, nil
}

// Addrs lists the host's IPv4 addresses with their interfaces.
func Addrs() ([]config.HostAddr, error) {
	addrs, err := netlink.AddrList(nil, unix.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	names := map[int]string{}
	var out []config.HostAddr
	for _, a := range addrs {
		name, ok := names[a.LinkIndex]
		if !ok {
			if l, err := netlink.LinkByIndex(a.LinkIndex); err == nil {
				name = l.Attrs().Name
			}
			names[a.LinkIndex] = name
		}
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		out = append(out, config.HostAddr{Interface: name, Prefix: netip.PrefixFrom(ip, ones)})
	}
	return out, nil
}
