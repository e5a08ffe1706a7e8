package hostnet

import (
	"errors"
	"fmt"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"microvm.dev/microvm/internal/config"
)

// ErrNoDefaultRoute is returned when "auto" must find the uplink and the
// network namespace has no IPv4 default route.
var ErrNoDefaultRoute = errors.New("no IPv4 default route, so the uplink cannot be found automatically; set host.externalInterface")

// defaultRoute is the IPv4 default route of the main table with the lowest
// metric that has an interface.
func (h *Host) defaultRoute() (netlink.Route, error) {
	routes, err := h.nl.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return netlink.Route{}, fmt.Errorf("list routes: %w", err)
	}
	found := false
	var best netlink.Route
	for _, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		if r.LinkIndex == 0 {
			continue
		}
		if !found || r.Priority < best.Priority {
			found, best = true, r
		}
	}
	if !found {
		return netlink.Route{}, ErrNoDefaultRoute
	}
	return best, nil
}

// DefaultRouteInterface names the interface of the IPv4 default route.
func (h *Host) DefaultRouteInterface() (string, error) {
	r, err := h.defaultRoute()
	if err != nil {
		return "", err
	}
	link, err := h.nl.LinkByIndex(r.LinkIndex)
	if err != nil {
		return "", fmt.Errorf("default route interface %d: %w", r.LinkIndex, err)
	}
	return link.Attrs().Name, nil
}

// DefaultGateway is the next hop of the IPv4 default route, if it has one.
func (h *Host) DefaultGateway() (string, error) {
	r, err := h.defaultRoute()
	if err != nil {
		return "", err
	}
	if r.Gw == nil {
		return "", fmt.Errorf("the default route has no gateway")
	}
	return r.Gw.String(), nil
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

// Addrs lists the namespace's addresses with their interfaces, but for
// those on microvm's own links: a subnet a removed VM's bridge still
// holds is free for another VM (the reconcile deletes the bridge before it
// makes the new one), and one a VM of the file holds is that VM's (the
// validation's own check between VMs). An address whose link appeared
// between the listing of links and that of addresses (a reconcile under
// way) is read again.
func (h *Host) Addrs() ([]config.HostAddr, error) {
	for try := 0; ; try++ {
		o, err := h.observe()
		if err != nil {
			return nil, err
		}
		ours := map[int]bool{}
		for _, l := range o.ours {
			ours[l.Attrs().Index] = true
		}
		known := map[int]bool{}
		for _, l := range o.byName {
			known[l.Attrs().Index] = true
		}
		var out []config.HostAddr
		unknown := false
		for idx, addrs := range o.addrs {
			if ours[idx] {
				continue
			}
			if !known[idx] {
				unknown = true
				continue
			}
			for _, a := range addrs {
				if p, ok := prefixOf(a); ok {
					out = append(out, config.HostAddr{Interface: linkName(o, idx), Prefix: p})
				}
			}
		}
		if !unknown || try == 2 {
			return out, nil
		}
	}
}

// HostOptions are the facts of this namespace and host that validation
// checks a file against: its addresses, the given CPU count, and whether
// the kernel has samepage merging (host.ksm).
func (h *Host) HostOptions(cpus int) (config.Options, error) {
	addrs, err := h.Addrs()
	if err != nil {
		return config.Options{}, err
	}
	return config.Options{HostCPUs: cpus, HostAddrs: addrs, NoKSM: noKSM(KSMDir)}, nil
}

// KSMDir is the kernel's samepage merging in sysfs.
const KSMDir = "/sys/kernel/mm/ksm"

// noKSM says why the kernel has no samepage merging at dir ("": it has).
func noKSM(dir string) string {
	if _, err := os.Stat(dir + "/run"); err != nil {
		return dir + "/run is missing (a kernel built without CONFIG_KSM)"
	}
	return ""
}
