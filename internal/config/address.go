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
