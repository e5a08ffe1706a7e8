package config

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Limits checked by validation.
const (
	MinMemory = 128 * MiB
	// LimitMemoryHeadroom is what a memory limit must allow beyond the
	// guest's RAM for the hypervisor itself.
	LimitMemoryHeadroom = 64 * MiB
	MinVolumeSize       = 1 * MiB
	MaxVCPU             = 255
	// MaxVolumeNameLen is the virtio-blk serial length; the guest finds a
	// volume by serial = name.
	MaxVolumeNameLen = 20
)

var (
	vmNameRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	volumeNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
	imageNameRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,127}$`)
	ifNameRE     = regexp.MustCompile(`^[A-Za-z0-9_.@-]+$`)
	userRE       = regexp.MustCompile(`^([0-9]+|[a-z_][a-z0-9_-]*[$]?)$`)
	// hostNameRE is a host name as os.Hostname reports it.
	hostNameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$`)
	// reservedMounts may not be a volume's mount point.
	reservedMounts = map[string]bool{"/": true, "/proc": true, "/sys": true, "/dev": true, "/run": true}
)

type validator struct {
	r    *reporter
	opts Options
	v6   ipv6Plan // from host.ipv6Prefix (host runs before the VMs)
}

func (v *validator) host(h *Host) {
	v.registries("host.registries", h.Registries)
	if h.ExternalInterface != DefaultExternalInterface {
		if msg := checkIfName(h.ExternalInterface); msg != "" {
			v.r.addf("host.externalInterface", "%s (or write auto)", msg)
		}
	}
	seen := map[int]int{}
	for i, p := range h.AllowedTCPPorts {
		ip := indexPath("host.allowedTCPPorts", i)
		if p < 1 || p > 65535 {
			v.r.addf(ip, "port %d is outside 1-65535", p)
			continue
		}
		if j, dup := seen[p]; dup {
			v.r.addf(ip, "port %d is listed twice (also at [%d])", p, j)
		}
		seen[p] = i
	}
	v.ipv6Prefix(h.IPv6Prefix)
	if s := h.Tailscale.Socket; s != "" && !filepath.IsAbs(s) {
		v.r.addf("host.tailscale.socket", "%q is not an absolute path (tailscaled's socket, such as /var/run/tailscale/tailscaled.sock)", s)
	}
	if i := h.Tailscale.Interface; i != "" {
		if msg := checkIfName(i); msg != "" {
			v.r.addf("host.tailscale.interface", "%s", msg)
		}
	}
	if p := h.Tailscale.Port; p < 0 || p > 65535 {
		v.r.addf("host.tailscale.port", "port %d is outside 1-65535", p)
	}
	for i, d := range h.DNS {
		if _, err := ResolverAddr(d); err != nil {
			v.r.addf(indexPath("host.dns", i), "%v", err)
		}
	}
	for i, s := range h.ServiceCIDRs {
		if _, err := ServiceCIDR(s); err != nil {
			v.r.addf(indexPath("host.serviceCIDRs", i), "%v", err)
		}
	}
	if r := h.Reclaim; r != nil {
		switch {
		case r.Below <= 0:
			v.r.addf("host.reclaim.below", "below must be a size (the host's available memory under which VMs' memory is taken back, e.g. 2G)")
		case r.Above != 0 && r.Above <= r.Below:
			v.r.addf("host.reclaim.above", "above %s must be more than below %s, or the balloons would flap", r.Above, r.Below)
		}
	}
	if k := h.KSM; k != nil && k.Enabled {
		if k.PagesToScan < 0 {
			v.r.addf("host.ksm.pagesToScan", "pagesToScan %d is negative", k.PagesToScan)
		}
		if k.Sleep < 0 || k.Sleep > Duration(time.Minute) {
			v.r.addf("host.ksm.sleep", "sleep %s is outside 0-1m", k.Sleep)
		}
		if v.opts.NoKSM != "" {
			v.r.addf("host.ksm.enabled", "this host's kernel has no KSM: %s", v.opts.NoKSM)
		}
	}
}

// ServiceCIDR is a range of host.serviceCIDRs: an IPv4 or IPv6 prefix
// without host bits, as kube-apiserver's --service-cluster-ip-range names
// it.
func ServiceCIDR(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	switch {
	case err != nil:
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR range such as 10.96.0.0/12 (the API server's --service-cluster-ip-range)", s)
	case p.Masked() != p:
		return netip.Prefix{}, fmt.Errorf("range %s has host bits set; did you mean %s?", p, p.Masked())
	case p.Bits() == 0:
		return netip.Prefix{}, fmt.Errorf("range %s is every address: a Service range is the cluster's own, such as 10.96.0.0/12", p)
	}
	return p, nil
}

// ResolverAddr is a resolver named in host.dns: an address (port 53), or
// address:port.
func ResolverAddr(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if a, aerr := netip.ParseAddr(s); aerr == nil {
		ap, err = netip.AddrPortFrom(a, 53), nil
	}
	if err != nil || ap.Port() == 0 || ap.Addr().IsUnspecified() {
		return netip.AddrPort{}, fmt.Errorf("%q is not a resolver's address (an IP address, or address:port)", s)
	}
	return ap, nil
}

// domain is the VMs' DNS domain p says (default DefaultDomain), lower
// case; a name that is not a DNS name is reported.
func (v *validator) domain(p, d string) string {
	if d == "" {
		return DefaultDomain
	}
	d = strings.ToLower(strings.TrimSuffix(d, "."))
	labels := strings.Split(d, ".")
	if len(d) > 253-13 { // room for a VM name of 12 bytes and its dot
		v.r.addf(p, "%q is %d bytes: a domain with a VM's name must fit DNS's 253", d, len(d))
		return d
	}
	for _, l := range labels {
		if !dnsLabelRE.MatchString(l) {
			v.r.addf(p, "%q is not a DNS name: label %q must be 1-63 letters, digits or hyphens, not starting or ending with a hyphen", d, l)
			return d
		}
	}
	return d
}

var dnsLabelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// checkIfName returns why name cannot be a Linux interface name, or "".
func checkIfName(name string) string {
	switch {
	case name == "":
		return "interface name is empty"
	case len(name) > MaxIfNameLen:
		return fmt.Sprintf("interface name %q is %d bytes, over the kernel's limit of %d", name, len(name), MaxIfNameLen)
	case name == "." || name == ".." || !ifNameRE.MatchString(name):
		return fmt.Sprintf("%q is not a valid interface name (letters, digits, _ . @ - only)", name)
	}
	return ""
}
