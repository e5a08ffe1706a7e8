package config

import (
	"fmt"
	"net/netip"
)

// MaxIfNameLen is the kernel's limit on interface names (IFNAMSIZ - 1).
const MaxIfNameLen = 15

// Interface name prefixes of a VM's bridge and TAP.
const (
	BridgePrefix = "br-"
	TAPPrefix    = "vm-"
)

// MaxNameLen is the longest VM name whose interface names fit MaxIfNameLen.
const MaxNameLen = MaxIfNameLen - len(BridgePrefix)

// BridgeName is the bridge of the VM called name.
func BridgeName(name string) string { return BridgePrefix + name }

// TAPName is the TAP device of the VM called name.
func TAPName(name string) string { return TAPPrefix + name }

// IndexSubnet is the subnet a VM gets from its index: 10.<index>.0.0/24.
func IndexSubnet(index int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(index), 0, 0}), 24)
}

// deriveNet computes the addressing of a VM with a valid subnet.
func deriveNet(name string, index int, subnet netip.Prefix) Net {
	gw := subnet.Addr().Next()
	addr := gw.Next()
	return Net{
		Subnet:  subnet,
		Gateway: gw,
		Address: addr,
		Bridge:  BridgeName(name),
		TAP:     TAPName(name),
		MAC:     deriveMAC(index, addr),
	}
}

// deriveMAC gives 02:00:00:00:00:<index> for indexed VMs (as the reference
// setup does) and 02:00:<the VM's IPv4 address> otherwise. Both are locally
// administered unicast; they cannot collide because no VM address lies in
// 0.0.0.0/8, and VM addresses are unique because subnets may not overlap.
func deriveMAC(index int, addr netip.Addr) string {
	if index > 0 {
		return fmt.Sprintf("02:00:00:00:00:%02x", index)
	}
	a := addr.As4()
	return fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", a[0], a[1], a[2], a[3])
}

// ULAPrefix is where VMs' IPv6 networks come from by default: a unique
// local prefix (RFC 4193) of microvm's, "mic" in its global ID. Each VM's
// /64 is it followed by the VM's IPv4 network address, so VMs whose IPv4
// subnets do not overlap never share one. Behind NAT66, as IPv4 is behind
// NAT.
var ULAPrefix = netip.MustParsePrefix("fd6d:6963::/32")

// ULASubnet6 is the /64 of ULAPrefix for the IPv4 subnet v4.
func ULASubnet6(v4 netip.Prefix) netip.Prefix {
	b := ULAPrefix.Addr().As16()
	a := v4.Masked().Addr().As4()
	copy(b[4:8], a[:])
	return netip.PrefixFrom(netip.AddrFrom16(b), 64)
}

// RoutedSubnet6 is the index-th /64 of a routed prefix of at most /56.
func RoutedSubnet6(prefix netip.Prefix, index int) netip.Prefix {
	b := prefix.Masked().Addr().As16()
	b[7] |= byte(index)
	return netip.PrefixFrom(netip.AddrFrom16(b), 64)
}

// deriveNet6 fills in the IPv6 addressing of a VM's /64.
func deriveNet6(n *Net, subnet6 netip.Prefix, routed bool) {
	b := subnet6.Masked().Addr().As16()
	b[15] = 1
	n.Subnet6, n.Gateway6, n.Routed6 = subnet6.Masked(), netip.AddrFrom16(b), routed
	b[15] = 2
	n.Address6 = netip.AddrFrom16(b)
}
