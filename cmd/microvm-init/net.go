package main

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"microvm.dev/microvm/internal/guest"
)

// configureNetwork brings lo up and gives the NIC with the spec's MAC its
// static address and default route.
func configureNetwork(ns guest.NetSpec) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	mac, err := net.ParseMAC(ns.MAC)
	if err != nil {
		return fmt.Errorf("MAC %q: %w", ns.MAC, err)
	}
	link, err := linkByMAC(mac, 10*time.Second)
	if err != nil {
		return err
	}
	addr, err := netlink.ParseAddr(ns.Address)
	if err != nil {
		return fmt.Errorf("address %q: %w", ns.Address, err)
	}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("address %s on %s: %w", ns.Address, link.Attrs().Name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("%s up: %w", link.Attrs().Name, err)
	}
	gw := net.ParseIP(ns.Gateway)
	if gw == nil {
		return fmt.Errorf("gateway %q is not an address", ns.Gateway)
	}
	if err := netlink.RouteReplace(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw}); err != nil {
		return fmt.Errorf("default route via %s: %w", gw, err)
	}
	if ns.Address6 != "" {
		return configureIPv6(link, ns)
	}
	return nil
}

// configureIPv6 gives the NIC its static IPv6 address (no duplicate
// address detection: the host made it unique, and it is usable at once)
// and the default route via its gateway.
func configureIPv6(link netlink.Link, ns guest.NetSpec) error {
	addr, err := netlink.ParseAddr(ns.Address6)
	if err != nil {
		return fmt.Errorf("address6 %q: %w", ns.Address6, err)
	}
	addr.Flags = unix.IFA_F_NODAD
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("address %s on %s: %w", ns.Address6, link.Attrs().Name, err)
	}
	gw := net.ParseIP(ns.Gateway6)
	if gw == nil {
		return fmt.Errorf("gateway6 %q is not an address", ns.Gateway6)
	}
	if err := netlink.RouteReplace(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw}); err != nil {
		return fmt.Errorf("default IPv6 route via %s: %w", gw, err)
	}
	return nil
}

func linkByMAC(mac net.HardwareAddr, wait time.Duration) (netlink.Link, error) {
	deadline := time.Now().Add(wait)
	for {
		links, err := netlink.LinkList()
		if err != nil {
			return nil, fmt.Errorf("list links: %w", err)
		}
		var seen []string
		for _, l := range links {
			if strings.EqualFold(l.Attrs().HardwareAddr.String(), mac.String()) {
				return l, nil
			}
			seen = append(seen, l.Attrs().Name+"="+l.Attrs().HardwareAddr.String())
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no NIC with MAC %s (have %s)", mac, strings.Join(seen, ", "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
