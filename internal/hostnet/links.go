package hostnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"

	"microvm.dev/microvm/internal/apitypes"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"microvm.dev/microvm/internal/config"
)

// AliasPrefix marks an interface as microvm's: its alias is "microvm:<vm>".
// An interface without it is foreign and is never changed or deleted.
const AliasPrefix = "microvm:"

// VMLink is the host side of one VM's network.
type VMLink struct {
	// VM is the VM's name.
	VM string
	// Bridge is br-<vm>.
	Bridge string
	// TAP is vm-<vm>.
	TAP string
	// Gateway is the bridge's address with the subnet's prefix length.
	Gateway netip.Prefix
	// Gateway6 is the bridge's IPv6 address with its /64 (invalid: the
	// VM has no IPv6, and IPv6 stays off on its links).
	Gateway6 netip.Prefix
}

// gateways are the bridge's addresses.
func (w VMLink) gateways() []netip.Prefix {
	if w.Gateway6.IsValid() {
		return []netip.Prefix{w.Gateway, w.Gateway6}
	}
	return []netip.Prefix{w.Gateway}
}

// LinksFor derives the host links of every VM in cfg.
func LinksFor(cfg *config.Config) []VMLink {
	out := make([]VMLink, 0, len(cfg.VMs))
	for _, vm := range cfg.VMs {
		l := VMLink{
			VM:      vm.Name,
			Bridge:  vm.Net.Bridge,
			TAP:     vm.Net.TAP,
			Gateway: netip.PrefixFrom(vm.Net.Gateway, vm.Net.Subnet.Bits()),
		}
		if vm.Net.HasIPv6() {
			l.Gateway6 = netip.PrefixFrom(vm.Net.Gateway6, vm.Net.Subnet6.Bits())
		}
		out = append(out, l)
	}
	return out
}

// Owner is who owns a TAP: its hypervisor's uid and gid.
type Owner struct{ UID, GID uint32 }

// Options tune the reconcile.
type Options struct {
	// TAPOwner and TAPGroup own the TAPs, so a hypervisor running as that
	// user can open them without privileges (0 = root).
	TAPOwner, TAPGroup uint32
	// TAPOwners own the TAPs of the VMs named instead: hypervisors that
	// open their TAP by name and run as an id of their own.
	TAPOwners map[string]Owner
	// BeforeChanges, if set, runs after the conflict check passed and before
	// any interface is changed (the firewall goes there, so isolation holds
	// before a VM link comes up). Its error stops the reconcile.
	BeforeChanges func() error
	// DryRun measures and lists the changes the reconcile would make,
	// and makes none (BeforeChanges is not run).
	DryRun bool
}

// Change is one operation the reconcile performed.
type Change = apitypes.LinkChange

// ConflictError says the host holds something microvm must not take over.
type ConflictError struct{ Problems []string }

func (e *ConflictError) Error() string {
	return "the host's network conflicts with the config (nothing was changed):\n  " + strings.Join(e.Problems, "\n  ")
}

// observed is one snapshot of the namespace's links and addresses.
type observed struct {
	// planned is the index a dry run gave its last made-up link (each
	// new one is one below: no real link's); dry holds the settings a dry
	// run would have made (nil: not a dry run).
	planned int
	dry     map[string]string
	byName  map[string]netlink.Link
	addrs   map[int][]netlink.Addr // by link index
	ours    map[string]netlink.Link
}

func (h *Host) observe() (*observed, error) {
	links, err := h.nl.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	addrs, err := h.nl.AddrList(nil, unix.AF_UNSPEC)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	o := &observed{byName: map[string]netlink.Link{}, addrs: map[int][]netlink.Addr{}, ours: map[string]netlink.Link{}}
	for _, l := range links {
		a := l.Attrs()
		o.byName[a.Name] = l
		if strings.HasPrefix(a.Alias, AliasPrefix) {
			o.ours[a.Name] = l
		}
	}
	for _, a := range addrs {
		o.addrs[a.LinkIndex] = append(o.addrs[a.LinkIndex], a)
	}
	return o, nil
}

// conflicts lists what would make applying want unsafe: a foreign interface
// holding one of our names, or a foreign interface holding an address in a
// VM subnet. It is checked in full before anything is changed.
func (o *observed) conflicts(want []VMLink) []string {
	var problems []string
	ourIdx := map[int]bool{}
	for _, l := range o.ours {
		ourIdx[l.Attrs().Index] = true
	}
	for _, w := range want {
		for _, name := range []string{w.Bridge, w.TAP} {
			if l, exists := o.byName[name]; exists && o.ours[name] == nil {
				problems = append(problems, fmt.Sprintf("interface %s (%s) exists and is not managed by microvm (its alias is %q, not %s%s); remove or rename it", name, l.Type(), l.Attrs().Alias, AliasPrefix, w.VM))
			}
		}
		for _, gw := range w.gateways() {
			subnet := gw.Masked()
			for idx, addrs := range o.addrs {
				if ourIdx[idx] {
					continue
				}
				for _, a := range addrs {
					p, ok := prefixOf(a)
					if ok && p.Overlaps(subnet) {
						problems = append(problems, fmt.Sprintf("address %s on interface %s overlaps %s's subnet %s", p, linkName(o, idx), w.VM, subnet))
					}
				}
			}
		}
	}
	sort.Strings(problems)
	return problems
}

// hasAddr says whether link l holds the address p.
func (o *observed) hasAddr(l netlink.Link, p netip.Prefix) bool {
	for _, a := range o.addrs[l.Attrs().Index] {
		if q, ok := prefixOf(a); ok && q == p {
			return true
		}
	}
	return false
}

func linkName(o *observed, idx int) string {
	for name, l := range o.byName {
		if l.Attrs().Index == idx {
			return name
		}
	}
	return fmt.Sprintf("#%d", idx)
}

func prefixOf(a netlink.Addr) (netip.Prefix, bool) {
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok || a.IPNet == nil {
		return netip.Prefix{}, false
	}
	ones, _ := a.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), ones), true
}

// Reconcile makes the namespace's VM links equal to want: bridges with their
// gateway addresses, TAPs enslaved to them, all up; microvm's links of VMs no
// longer wanted are deleted. It measures first and acts only on differences,
// so a second run changes nothing and a run after a crash finishes the job.
// If a foreign interface stands in the way, it changes nothing and returns a
// *ConflictError.
func (h *Host) Reconcile(want []VMLink, opts Options) ([]Change, error) {
	o, err := h.observe()
	if err != nil {
		return nil, err
	}
	if problems := o.conflicts(want); len(problems) > 0 {
		return nil, &ConflictError{Problems: problems}
	}
	if opts.DryRun {
		o.dry = map[string]string{}
	}
	if opts.BeforeChanges != nil && !opts.DryRun {
		if err := opts.BeforeChanges(); err != nil {
			return nil, err
		}
	}
	var changes []Change
	record := func(op, target string) { changes = append(changes, Change{Op: op, Target: target}) }

	// Remove what is ours and no longer wanted: TAPs first, then bridges.
	keep := map[string]bool{}
	for _, w := range want {
		keep[w.Bridge], keep[w.TAP] = true, true
	}
	for _, pass := range []string{"tuntap", "bridge"} {
		for _, name := range sortedNames(o.ours) {
			l := o.ours[name]
			if keep[name] || (l.Type() == "tuntap") != (pass == "tuntap") {
				continue
			}
			if err := h.act(opts, func() error { return h.nl.LinkDel(l) }); err != nil && !errors.Is(err, unix.ENODEV) {
				return changes, fmt.Errorf("delete %s: %w", name, err)
			}
			record("delete-"+l.Type(), name)
		}
	}

	ipv6 := h.IPv6()
	if !ipv6 {
		// No IPv6 in the kernel: VM networks are IPv4 only (the network
		// layer warns).
		for i := range want {
			want[i].Gateway6 = netip.Prefix{}
		}
	}
	for _, w := range want {
		if err := h.ensureVM(o, w, opts, record); err != nil {
			return changes, fmt.Errorf("%s: %w", w.VM, err)
		}
	}
	if err := h.ensureSysctls(want, ipv6, o.dry, record); err != nil {
		return changes, err
	}
	return changes, nil
}

// IPv6 says whether the namespace has IPv6 at all (a kernel booted with
// ipv6.disable=1 has none).
func (h *Host) IPv6() bool {
	ok := false
	h.Do(func() error {
		_, err := os.Stat("/proc/sys/net/ipv6")
		ok = err == nil
		return nil
	})
	return ok
}

// bridgeIPv6 are a bridge's IPv6 settings: on (a VM with IPv6: no router
// advertisements, autoconfiguration or redirects taken from the VM's
// network) or off.
func bridgeIPv6(bridge string, on bool) []SysctlSetting {
	c := "net.ipv6.conf." + bridge + "."
	if !on {
		return []SysctlSetting{{c + "disable_ipv6", "1"}}
	}
	return []SysctlSetting{{c + "disable_ipv6", "0"}, {c + "accept_ra", "0"}, {c + "autoconf", "0"}, {c + "accept_redirects", "0"}}
}

// ensureSysctls turns IPv4 forwarding on (and IPv6 forwarding where a VM
// has IPv6), and IPv6 off on every VM link but the bridges of VMs with
// IPv6 (a host link-local address on an IPv4-only VM network would only
// widen what a VM can reach; a TAP is a bridge port and needs no address),
// entering the namespace once for all of them.
func (h *Host) ensureSysctls(want []VMLink, ipv6 bool, dry map[string]string, record func(op, target string)) error {
	if len(want) == 0 {
		return nil
	}
	settings := []SysctlSetting{{"net.ipv4.ip_forward", "1"}}
	if ipv6 {
		v6 := false
		for _, w := range want {
			settings = append(settings, bridgeIPv6(w.Bridge, w.Gateway6.IsValid())...)
			settings = append(settings, SysctlSetting{"net.ipv6.conf." + w.TAP + ".disable_ipv6", "1"})
			v6 = v6 || w.Gateway6.IsValid()
		}
		if v6 {
			settings = append(settings, SysctlSetting{"net.ipv6.conf.all.forwarding", "1"})
		}
	}
	changed, err := h.sysctls(settings, dry)
	for _, st := range changed {
		record("set-sysctl", st.Name+"="+st.Value)
	}
	return err
}

// act does f, unless opts says to make no change.
func (h *Host) act(opts Options, f func() error) error {
	if opts.DryRun {
		return nil
	}
	return f()
}

func (h *Host) ensureVM(o *observed, w VMLink, opts Options, record func(op, target string)) error {
	alias := AliasPrefix + w.VM
	br, err := h.ensureLink(o, w.Bridge, "bridge", alias, func() netlink.Link {
		return &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: w.Bridge}}
	}, nil, opts, record)
	if err != nil {
		return err
	}
	if w.Gateway6.IsValid() && !o.hasAddr(br, w.Gateway6) {
		// IPv6 on before its address is added (the kernel refuses one on a
		// link with IPv6 off), and the host takes no router advertisement
		// or address from the VM's network. A bridge that has it is left to
		// ensureSysctls, which checks every link's settings in one pass.
		changed, err := h.sysctls(bridgeIPv6(w.Bridge, true), o.dry)
		for _, st := range changed {
			record("set-sysctl", st.Name+"="+st.Value)
		}
		if err != nil {
			return err
		}
	}
	if err := h.ensureAddrs(o, br, w.gateways(), opts, record); err != nil {
		return err
	}
	owner := Owner{opts.TAPOwner, opts.TAPGroup}
	if own, ok := opts.TAPOwners[w.VM]; ok {
		owner = own
	}
	tap, err := h.ensureLink(o, w.TAP, "tuntap", alias, func() netlink.Link {
		return &netlink.Tuntap{
			LinkAttrs: netlink.LinkAttrs{Name: w.TAP},
			Mode:      netlink.TUNTAP_MODE_TAP,
			Flags:     netlink.TUNTAP_DEFAULTS | netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR,
			Owner:     owner.UID,
			Group:     owner.GID,
		}
	}, func(l netlink.Link) bool {
		// A TAP owned by someone else than the hypervisor's user is made
		// again, but only while no hypervisor holds it (no carrier): a
		// running VM keeps its network until it restarts.
		t, ok := l.(*netlink.Tuntap)
		return ok && (t.Owner != owner.UID || t.Group != owner.GID) && l.Attrs().RawFlags&unix.IFF_LOWER_UP == 0
	}, opts, record)
	if err != nil {
		return err
	}
	if tap.Attrs().MasterIndex != br.Attrs().Index {
		if err := h.act(opts, func() error { return h.nl.LinkSetMasterByIndex(tap, br.Attrs().Index) }); err != nil {
			return fmt.Errorf("attach %s to %s: %w", w.TAP, w.Bridge, err)
		}
		record("attach", w.TAP+" to "+w.Bridge)
	}
	for _, l := range []netlink.Link{br, tap} {
		if l.Attrs().Flags&net.FlagUp == 0 {
			if err := h.act(opts, func() error { return h.nl.LinkSetUp(l) }); err != nil {
				return fmt.Errorf("set %s up: %w", l.Attrs().Name, err)
			}
			record("set-up", l.Attrs().Name)
		}
	}
	return nil
}

// ensureLink returns the link called name, creating it (marked with alias)
// when missing or when ours but of the wrong type, or (stale, when set)
// when stale says it must be made again. A dry run returns the link it
// would make, with an index no real link has.
func (h *Host) ensureLink(o *observed, name, typ, alias string, mk func() netlink.Link, stale func(netlink.Link) bool, opts Options, record func(op, target string)) (netlink.Link, error) {
	if l, ok := o.ours[name]; ok {
		if l.Type() == typ && l.Attrs().Alias == alias && (stale == nil || !stale(l)) {
			return l, nil
		}
		if err := h.act(opts, func() error { return h.nl.LinkDel(l) }); err != nil {
			return nil, fmt.Errorf("delete %s (%s, alias %q) to recreate it: %w", name, l.Type(), l.Attrs().Alias, err)
		}
		record("delete-"+l.Type(), name)
	}
	if opts.DryRun {
		l := mk()
		o.planned--
		l.Attrs().Index = o.planned
		record("create-"+typ, name)
		return l, nil
	}
	// A TAP is created by an ioctl on /dev/net/tun, which acts in the calling
	// thread's namespace, not the netlink handle's: run it inside the
	// namespace (bridges are created the same way for symmetry).
	if err := h.Do(func() error { return h.nl.LinkAdd(mk()) }); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create %s: an interface of that name appeared meanwhile: %w", name, err)
		}
		return nil, fmt.Errorf("create %s %s: %w", typ, name, err)
	}
	l, err := h.nl.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("find %s after creating it: %w", name, err)
	}
	if err := h.nl.LinkSetAlias(l, alias); err != nil {
		h.nl.LinkDel(l)
		return nil, fmt.Errorf("mark %s as microvm's: %w", name, err)
	}
	record("create-"+typ, name)
	return l, nil
}

// ensureAddrs makes the bridge's addresses exactly gws (its IPv6
// link-local address, the kernel's, is left alone).
func (h *Host) ensureAddrs(o *observed, br netlink.Link, gws []netip.Prefix, opts Options, record func(op, target string)) error {
	have := map[netip.Prefix]bool{}
	for _, a := range o.addrs[br.Attrs().Index] {
		p, ok := prefixOf(a)
		if ok && slices.Contains(gws, p) {
			have[p] = true
			continue
		}
		if ok && p.Addr().Is6() && p.Addr().IsLinkLocalUnicast() {
			continue
		}
		if err := h.act(opts, func() error { return h.nl.AddrDel(br, &a) }); err != nil {
			return fmt.Errorf("remove stale address %s from %s: %w", a.IPNet, br.Attrs().Name, err)
		}
		record("delete-addr", fmt.Sprintf("%s on %s", a.IPNet, br.Attrs().Name))
	}
	for _, gw := range gws {
		if have[gw] {
			continue
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: gw.Addr().AsSlice(), Mask: net.CIDRMask(gw.Bits(), gw.Addr().BitLen())}}
		if gw.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD // the gateway's, unique by construction: usable at once
		}
		if err := h.act(opts, func() error { return h.nl.AddrAdd(br, addr) }); err != nil {
			return fmt.Errorf("add %s to %s: %w", gw, br.Attrs().Name, err)
		}
		record("add-addr", fmt.Sprintf("%s on %s", gw, br.Attrs().Name))
	}
	return nil
}

// Teardown deletes every interface microvm owns in the namespace and returns
// what it deleted. Foreign interfaces are never touched.
func (h *Host) Teardown() ([]Change, error) {
	return h.Reconcile(nil, Options{})
}

// LinkState is the observed state of one of microvm's interfaces.
type LinkState = apitypes.LinkState

// Show lists microvm's interfaces in the namespace, sorted by name.
func (h *Host) Show() ([]LinkState, error) {
	o, err := h.observe()
	if err != nil {
		return nil, err
	}
	var out []LinkState
	for _, name := range sortedNames(o.ours) {
		l := o.ours[name]
		a := l.Attrs()
		st := LinkState{Name: name, VM: strings.TrimPrefix(a.Alias, AliasPrefix), Type: l.Type(), Up: a.Flags&net.FlagUp != 0}
		if a.MasterIndex != 0 {
			st.Master = linkName(o, a.MasterIndex)
		}
		for _, ad := range o.addrs[a.Index] {
			if p, ok := prefixOf(ad); ok {
				st.Addrs = append(st.Addrs, p.String())
			}
		}
		out = append(out, st)
	}
	return out, nil
}

func sortedNames(m map[string]netlink.Link) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// LinkCounters are the bytes an interface has received and sent.
type LinkCounters struct{ Received, Sent uint64 }

// Counters reads the byte counters of microvm's interfaces in the
// namespace, by name.
func (h *Host) Counters() (map[string]LinkCounters, error) {
	links, err := h.nl.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	out := map[string]LinkCounters{}
	for _, l := range links {
		a := l.Attrs()
		if !strings.HasPrefix(a.Alias, AliasPrefix) || a.Statistics == nil {
			continue
		}
		out[a.Name] = LinkCounters{Received: a.Statistics.RxBytes, Sent: a.Statistics.TxBytes}
	}
	return out, nil
}
