package config

import (
	"fmt"
	"net/netip"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"golang.org/x/crypto/ssh"

	"microvm.dev/microvm/internal/secrets"
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

// vm validates one merged VM; s is what the file wrote for it.
func (v *validator) vm(vm *VM, s VMSpec) {
	p := joinPath("vms", vm.Name)
	switch {
	case len(vm.Name) > MaxNameLen:
		v.r.addf(p, "name %q is %d bytes: the bridge %q would be %d bytes, over the kernel's %d-byte interface name limit (names may be at most %d bytes)",
			vm.Name, len(vm.Name), BridgeName(vm.Name), len(BridgeName(vm.Name)), MaxIfNameLen, MaxNameLen)
	case !vmNameRE.MatchString(vm.Name):
		v.r.addf(p, "name %q may use only lowercase letters, digits and '-', starting with a letter or digit (it becomes the hostname and interface names)", vm.Name)
	}
	v.spec(p, &s)
	v.secretsOnVolumes(p, vm)
	if m := vm.Limits.Memory; m != 0 && m < vm.Memory+LimitMemoryHeadroom {
		v.r.addf(joinPath(p, "limits.memory"), "limits.memory %s leaves no room for the hypervisor: it must be at least memory (%s) plus %s", m, vm.Memory, LimitMemoryHeadroom)
	}
	var subnet netip.Prefix
	switch {
	case s.Index != nil && (*s.Index < 1 || *s.Index > 255):
		v.r.addf(joinPath(p, "index"), "index %d is outside 1-255", *s.Index)
		return
	case s.Subnet != nil:
		var ok bool
		if subnet, ok = v.subnet(joinPath(p, "subnet"), *s.Subnet); !ok {
			return
		}
	case s.Index != nil:
		subnet = IndexSubnet(*s.Index)
	default:
		v.r.addf(p, "needs index (for 10.<index>.0.0/24) or subnet")
		return
	}
	vm.Net = deriveNet(vm.Name, vm.Index, subnet)
	v.net6(p, vm, s)
}

// IPv6None is host.ipv6Prefix's value for IPv4-only VM networks.
const IPv6None = "none"

// ipv6Prefix checks host.ipv6Prefix and keeps what it means for net6.
func (v *validator) ipv6Prefix(s string) {
	const p = "host.ipv6Prefix"
	switch s {
	case "":
		v.v6 = ipv6Plan{on: true}
		return
	case IPv6None:
		return
	}
	pfx, err := netip.ParsePrefix(s)
	switch {
	case err != nil || !pfx.Addr().Is6() || pfx.Addr().Is4In6():
		v.r.addf(p, "%q is not an IPv6 prefix such as 2001:db8:42::/48 (or none)", s)
	case pfx.Masked() != pfx:
		v.r.addf(p, "prefix %s has host bits set; did you mean %s?", pfx, pfx.Masked())
	case pfx.Bits() < 32 || pfx.Bits() > 56:
		v.r.addf(p, "prefix %s is /%d: it must be /32 to /56, room for one /64 per VM index", pfx, pfx.Bits())
	case !usable6(pfx.Addr()):
		v.r.addf(p, "prefix %s is not usable for VM networks (loopback, link-local, multicast or unspecified)", pfx)
	default:
		v.v6 = ipv6Plan{on: true, prefix: pfx}
	}
}

// ipv6Plan is how VMs without subnet6 get their IPv6 network.
type ipv6Plan struct {
	on     bool
	prefix netip.Prefix // a routed prefix; invalid: the ULA scheme
}

// net6 gives vm its IPv6 network: its subnet6, else the host's scheme.
func (v *validator) net6(p string, vm *VM, s VMSpec) {
	switch {
	case s.Subnet6 != nil:
		sp := joinPath(p, "subnet6")
		pfx, err := netip.ParsePrefix(*s.Subnet6)
		switch {
		case err != nil || !pfx.Addr().Is6() || pfx.Addr().Is4In6():
			v.r.addf(sp, "%q is not an IPv6 subnet such as fd00:1:2:3::/64", *s.Subnet6)
		case pfx.Bits() != 64:
			v.r.addf(sp, "subnet6 %s is /%d: a VM's IPv6 network is a /64 (what SLAAC and router advertisements need)", pfx, pfx.Bits())
		case pfx.Masked() != pfx:
			v.r.addf(sp, "subnet6 %s has host bits set; did you mean %s?", pfx, pfx.Masked())
		case !usable6(pfx.Addr()):
			v.r.addf(sp, "subnet6 %s is not usable for a VM network (loopback, link-local, multicast or unspecified)", pfx)
		default:
			deriveNet6(&vm.Net, pfx, !isULA(pfx.Addr()))
		}
	case !v.v6.on:
	case v.v6.prefix.IsValid() && vm.Index == 0:
		v.r.addf(p, "needs index or subnet6: VMs' IPv6 networks come from host.ipv6Prefix %s by index", v.v6.prefix)
	case v.v6.prefix.IsValid():
		deriveNet6(&vm.Net, RoutedSubnet6(v.v6.prefix, vm.Index), !isULA(v.v6.prefix.Addr()))
	default:
		deriveNet6(&vm.Net, ULASubnet6(vm.Net.Subnet), false)
	}
}

func usable6(a netip.Addr) bool {
	return !a.IsLoopback() && !a.IsLinkLocalUnicast() && !a.IsMulticast() && !a.IsUnspecified()
}

// isULA says a is a unique local address (fc00::/7): reached through NAT66.
func isULA(a netip.Addr) bool { return a.Is6() && a.As16()[0]&0xfe == 0xfc }

// secrets checks secret files: where they go, their mode, and that each
// is an age file (it is decrypted only where the VM starts).
func (v *validator) secrets(p string, list []Secret) {
	paths := map[string]int{}
	for i, sec := range list {
		sp := indexPath(p, i)
		switch {
		case sec.Path == "":
			v.r.addf(joinPath(sp, "path"), "a secret needs the path it appears at in the guest")
		case !path.IsAbs(sec.Path) || path.Clean(sec.Path) != sec.Path || sec.Path == "/":
			v.r.addf(joinPath(sp, "path"), "secret path %q must be an absolute, clean file path", sec.Path)
		default:
			if j, dup := paths[sec.Path]; dup {
				v.r.addf(joinPath(sp, "path"), "secret path %q is used twice (also at [%d])", sec.Path, j)
			}
			paths[sec.Path] = i
		}
		if _, err := ParseFileMode(sec.Mode); err != nil {
			v.r.addf(joinPath(sp, "mode"), "%v", err)
		}
		if sec.Owner != "" && !ownerRE.MatchString(sec.Owner) {
			v.r.addf(joinPath(sp, "owner"), "owner %q is not a user name or uid", sec.Owner)
		}
		if err := secrets.Check(sec.Age); err != nil {
			v.r.addf(joinPath(sp, "age"), "%v", err)
		}
	}
}

// secretsOnVolumes refuses a secret that would be written to a data
// volume, where its plaintext would be kept on the host's disk.
func (v *validator) secretsOnVolumes(p string, vm *VM) {
	for i, sec := range vm.Secrets {
		for _, vol := range vm.Volumes {
			if strings.HasPrefix(sec.Path, strings.TrimSuffix(vol.MountPoint, "/")+"/") {
				v.r.addf(joinPath(indexPath(joinPath(p, "secrets"), i), "path"), "secret path %q is on the data volume %s (%s): its plaintext would be kept on the host's disk; put it outside %s", sec.Path, vol.Name, vol.MountPoint, vol.MountPoint)
			}
		}
	}
}

// ownerRE matches a user name or uid.
var ownerRE = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}\$?$|^[0-9]{1,10}$`)

// ParseFileMode reads a secret's octal mode ("" is 0400).
func ParseFileMode(s string) (uint32, error) {
	if s == "" {
		return 0o400, nil
	}
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || m > 0o777 {
		return 0, fmt.Errorf("mode %q is not octal permission bits such as \"0400\"", s)
	}
	return uint32(m), nil
}

// spec validates the keys one VM (or the defaults) wrote, at path p.
func (v *validator) spec(p string, s *VMSpec) {
	v.egress(joinPath(p, "egress"), s.Egress, false)
	if s.Hypervisor != nil && !slices.Contains(Hypervisors(), *s.Hypervisor) {
		v.r.addf(joinPath(p, "hypervisor"), "unknown hypervisor %q (%s)", *s.Hypervisor, orList(Hypervisors()))
	}
	if s.VCPU != nil {
		switch n := *s.VCPU; {
		case n < 1:
			v.r.addf(joinPath(p, "vcpu"), "vcpu must be at least 1, not %d", n)
		case v.opts.HostCPUs > 0 && n > v.opts.HostCPUs:
			v.r.addf(joinPath(p, "vcpu"), "vcpu %d is more than the host's %d CPUs", n, v.opts.HostCPUs)
		case n > MaxVCPU:
			v.r.addf(joinPath(p, "vcpu"), "vcpu %d is more than %d", n, MaxVCPU)
		}
	}
	if s.Memory != nil && *s.Memory < MinMemory {
		v.r.addf(joinPath(p, "memory"), "memory %s is below the minimum of %s (sizes take units: 512M, 1G)", s.Memory, MinMemory)
	}
	if k := s.Kernel; k != nil && !k.IsHost() {
		if !path.IsAbs(k.Path) {
			v.r.addf(joinPath(p, "kernel.path"), "kernel path %q must be absolute", k.Path)
		}
		if k.Modules != "" && !path.IsAbs(k.Modules) {
			v.r.addf(joinPath(p, "kernel.modules"), "modules directory %q must be absolute", k.Modules)
		}
	}
	v.kernelParams(joinPath(p, "kernelParams"), s.KernelParams)
	if s.Image != nil {
		if msg := checkImage(*s.Image); msg != "" {
			v.r.addf(joinPath(p, "image"), "%s", msg)
		}
	}
	v.volumes(joinPath(p, "volumes"), s.Volumes)
	v.secrets(joinPath(p, "secrets"), s.Secrets)
	for i, key := range s.SSHKeys {
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(key)); err != nil {
			v.r.addf(indexPath(joinPath(p, "sshKeys"), i), "not an SSH public key in authorized_keys format: %v", err)
		}
	}
	for i, arg := range s.Command {
		if i == 0 && strings.TrimSpace(arg) == "" {
			v.r.addf(indexPath(joinPath(p, "command"), i), "the command is empty")
		}
	}
	for k := range s.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			v.r.addf(joinPath(joinPath(p, "env"), k), "%q is not an environment variable name", k)
		}
	}
	if s.Workdir != nil && !path.IsAbs(*s.Workdir) {
		v.r.addf(joinPath(p, "workdir"), "workdir %q must be an absolute path", *s.Workdir)
	}
	if s.Restart != nil && *s.Restart != RestartAlways && *s.Restart != RestartOnFailure && *s.Restart != RestartNo {
		v.r.addf(joinPath(p, "restart"), "restart must be always, on-failure or no, not %q", *s.Restart)
	}
	if s.StopTimeout != nil && (*s.StopTimeout < Duration(time.Second) || *s.StopTimeout > Duration(time.Hour)) {
		v.r.addf(joinPath(p, "stopTimeout"), "stopTimeout %s is outside 1s-1h", *s.StopTimeout)
	}
	if l := s.Limits; l != nil {
		lp := joinPath(p, "limits")
		if l.CPUWeight != 0 && (l.CPUWeight < 1 || l.CPUWeight > 10000) {
			v.r.addf(joinPath(lp, "cpuWeight"), "cpuWeight %d is outside 1-10000", l.CPUWeight)
		}
		switch {
		case l.CPUs < 0 || (l.CPUs > 0 && l.CPUs < 0.01):
			v.r.addf(joinPath(lp, "cpus"), "cpus %g must be at least 0.01", l.CPUs)
		case v.opts.HostCPUs > 0 && l.CPUs > float64(v.opts.HostCPUs):
			v.r.addf(joinPath(lp, "cpus"), "cpus %g is more than the host's %d CPUs", l.CPUs, v.opts.HostCPUs)
		}
	}
	if hc := s.HealthCheck; hc != nil {
		hp := joinPath(p, "healthCheck")
		switch {
		case hc.TCP == 0 && hc.HTTP == 0:
			v.r.addf(hp, "healthCheck needs tcp: PORT or http: PORT")
		case hc.TCP != 0 && hc.HTTP != 0:
			v.r.addf(hp, "healthCheck takes tcp or http, not both")
		case hc.TCP < 0 || hc.TCP > 65535:
			v.r.addf(joinPath(hp, "tcp"), "port %d is outside 1-65535", hc.TCP)
		case hc.HTTP < 0 || hc.HTTP > 65535:
			v.r.addf(joinPath(hp, "http"), "port %d is outside 1-65535", hc.HTTP)
		}
		if hc.Path != "" && (hc.HTTP == 0 || !strings.HasPrefix(hc.Path, "/") || strings.ContainsAny(hc.Path, " \t\r\n")) {
			v.r.addf(joinPath(hp, "path"), "path %q must start with / and goes with http", hc.Path)
		}
	}
	if sn := s.Snapshots; sn != nil {
		if sn.Keep < 0 {
			v.r.addf(joinPath(p, "snapshots.keep"), "keep %d is negative", sn.Keep)
		}
		if sn.Every != 0 && sn.Every < Duration(time.Minute) {
			v.r.addf(joinPath(p, "snapshots.every"), "every %s is under a minute", sn.Every)
		}
	}
	if s.Host != nil && !hostNameRE.MatchString(*s.Host) {
		v.r.addf(joinPath(p, "host"), "host %q is not a host name", *s.Host)
	}
	if s.PullPolicy != nil && *s.PullPolicy != PullMissing && *s.PullPolicy != PullAlways && *s.PullPolicy != PullNever {
		v.r.addf(joinPath(p, "pullPolicy"), "pullPolicy must be missing, always or never, not %q", *s.PullPolicy)
	}
	if s.Init != nil && *s.Init != InitMicrovm && *s.Init != InitImage {
		v.r.addf(joinPath(p, "init"), "init must be microvm or image, not %q", *s.Init)
	}
	if s.Store != nil && !slices.Contains(StoreKinds, *s.Store) {
		v.r.addf(joinPath(p, "store"), "store must be one of %s, not %q", strings.Join(StoreKinds, ", "), *s.Store)
	}
	if s.User != nil {
		if msg := checkUser(*s.User); msg != "" {
			v.r.addf(joinPath(p, "user"), "%s", msg)
		}
	}
	for i, a := range s.Ports {
		for j := range i {
			if a.Overlaps(s.Ports[j]) {
				v.r.addf(indexPath(joinPath(p, "ports"), i), "port %s overlaps %s at [%d]", a, s.Ports[j], j)
				break
			}
		}
	}
}

// checkUser returns why u is not a user as docker run --user takes it: a
// user name or uid, optionally with a group name or gid after a colon.
func checkUser(u string) string {
	name, group, hasGroup := strings.Cut(u, ":")
	switch {
	case !userRE.MatchString(name):
		return fmt.Sprintf("user %q: %q is neither a user name nor a uid (user, uid, user:group or uid:gid)", u, name)
	case hasGroup && !userRE.MatchString(group):
		return fmt.Sprintf("user %q: %q is neither a group name nor a gid (user, uid, user:group or uid:gid)", u, group)
	}
	return ""
}

// checkImage returns why ref is neither a store image name nor an OCI reference.
func checkImage(ref string) string {
	switch {
	case ref == "":
		return "image is empty"
	case strings.Contains(ref, ".."):
		return fmt.Sprintf("image %q may not contain '..'", ref)
	case strings.ContainsAny(ref, "/:@"):
		if _, err := name.ParseReference(ref, name.StrictValidation); err != nil {
			if _, err2 := name.ParseReference(ref); err2 != nil {
				return fmt.Sprintf("image %q is not a valid OCI reference: %v", ref, err2)
			}
		}
	case !imageNameRE.MatchString(ref):
		return fmt.Sprintf("image %q is not a store image name (lowercase letters, digits, . _ -) nor an OCI reference", ref)
	}
	return ""
}

func (v *validator) volumes(p string, vols []Volume) {
	names := map[string]int{}
	mounts := map[string]int{}
	for i, vol := range vols {
		vp := indexPath(p, i)
		switch {
		case vol.Name == "":
			v.r.addf(joinPath(vp, "name"), "a volume needs a name")
		case len(vol.Name) > MaxVolumeNameLen:
			v.r.addf(joinPath(vp, "name"), "volume name %q is %d bytes; at most %d (it is the disk's virtio serial)", vol.Name, len(vol.Name), MaxVolumeNameLen)
		case !volumeNameRE.MatchString(vol.Name):
			v.r.addf(joinPath(vp, "name"), "volume name %q may use only lowercase letters, digits, '_' and '-'", vol.Name)
		case strings.HasPrefix(vol.Name, "microvm-"):
			v.r.addf(joinPath(vp, "name"), "volume name %q: names starting microvm- are the serials of microvm's own disks (the store, the kernel's modules)", vol.Name)
		default:
			if j, dup := names[vol.Name]; dup {
				v.r.addf(joinPath(vp, "name"), "volume name %q is used twice (also at [%d])", vol.Name, j)
			}
			names[vol.Name] = i
		}
		mp := vol.MountPoint
		switch {
		case mp == "":
			v.r.addf(joinPath(vp, "mountPoint"), "a volume needs a mountPoint")
		case !path.IsAbs(mp):
			v.r.addf(joinPath(vp, "mountPoint"), "mount point %q must be an absolute path", mp)
		case path.Clean(mp) != mp:
			v.r.addf(joinPath(vp, "mountPoint"), "mount point %q is not clean; write %q", mp, path.Clean(mp))
		case reservedMounts[mp]:
			v.r.addf(joinPath(vp, "mountPoint"), "mount point %q is reserved for the system", mp)
		default:
			if j, dup := mounts[mp]; dup {
				v.r.addf(joinPath(vp, "mountPoint"), "mount point %q is used twice (also at [%d])", mp, j)
			}
			mounts[mp] = i
		}
		if vol.Size < MinVolumeSize {
			v.r.addf(joinPath(vp, "size"), "volume size %s is below the minimum of %s", vol.Size, MinVolumeSize)
		}
	}
}

// subnet parses and checks a VM subnet.
func (v *validator) subnet(p, s string) (netip.Prefix, bool) {
	pfx, err := netip.ParsePrefix(s)
	if err != nil {
		v.r.addf(p, "%q is not a CIDR subnet such as 192.168.50.0/24", s)
		return netip.Prefix{}, false
	}
	switch a := pfx.Addr(); {
	case !a.Is4():
		v.r.addf(p, "subnet %s is not IPv4 (VM networks are IPv4)", pfx)
	case pfx.Masked() != pfx:
		v.r.addf(p, "subnet %s has host bits set; did you mean %s?", pfx, pfx.Masked())
	case pfx.Bits() > 30:
		v.r.addf(p, "subnet %s is too small: it needs room for the gateway (.1) and the VM (.2), so /30 or larger", pfx)
	case a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() || a.As4()[0] == 0 || a.As4()[0] >= 224:
		v.r.addf(p, "subnet %s is not usable for a VM network (loopback, link-local, multicast or reserved)", pfx)
	default:
		return pfx, true
	}
	return netip.Prefix{}, false
}

// crossVM checks what VMs must not share: index, subnet, and the host's own addresses.
func (v *validator) crossVM(cfg *Config) {
	var hosted, unhosted []string
	for _, vm := range cfg.VMs {
		if vm.Host != "" {
			hosted = append(hosted, vm.Name)
		} else {
			unhosted = append(unhosted, vm.Name)
		}
	}
	if len(hosted) > 0 && len(unhosted) > 0 {
		v.r.addf(joinPath(joinPath("vms", unhosted[0]), "host"), "%s names no host while %s does: when one file drives several hosts, every VM names its host", unhosted[0], hosted[0])
	}
	byIndex := map[int]string{}
	type span struct {
		vm   *VM
		from netip.Addr
		to   netip.Addr
	}
	var spans []span
	for _, vm := range cfg.VMs {
		if vm.Index > 0 {
			if other, dup := byIndex[vm.Index]; dup {
				v.r.addf(joinPath(joinPath("vms", vm.Name), "index"), "index %d is also used by %s", vm.Index, other)
			} else {
				byIndex[vm.Index] = vm.Name
			}
		}
		if vm.Net.Subnet.IsValid() {
			spans = append(spans, span{vm, vm.Net.Subnet.Addr(), lastAddr(vm.Net.Subnet)})
		}
	}
	// Sort by start; a span overlaps an earlier one iff it starts before the
	// furthest end seen so far.
	sort.Slice(spans, func(i, j int) bool {
		if c := spans[i].from.Compare(spans[j].from); c != 0 {
			return c < 0
		}
		return spans[i].vm.Name < spans[j].vm.Name
	})
	var far *span
	for i := range spans {
		s := &spans[i]
		sameIndex := far != nil && s.vm.Index > 0 && s.vm.Index == far.vm.Index // reported as a duplicate index
		if far != nil && s.from.Compare(far.to) <= 0 && !sameIndex {
			v.r.addf(v.subnetPath(s.vm), "subnet %s overlaps %s of %s", s.vm.Net.Subnet, far.vm.Net.Subnet, far.vm.Name)
		}
		if far == nil || s.to.Compare(far.to) > 0 {
			far = s
		}
	}
	by6 := map[netip.Prefix]string{}
	for _, vm := range cfg.VMs {
		if !vm.Net.HasIPv6() {
			continue
		}
		if other, dup := by6[vm.Net.Subnet6]; dup {
			// Two derived ones can only meet where the index or the IPv4
			// subnets already clash, which is reported.
			if v.explicit6(vm.Name) || v.explicit6(other) {
				v.r.addf(v.subnet6Path(vm), "subnet6 %s is also %s's", vm.Net.Subnet6, other)
			}
			continue
		}
		by6[vm.Net.Subnet6] = vm.Name
	}
	for i, s := range cfg.Host.ServiceCIDRs {
		svc, err := ServiceCIDR(s)
		if err != nil {
			continue // reported with the host
		}
		for _, vm := range cfg.VMs {
			switch {
			case vm.Net.Subnet.IsValid() && vm.Net.Subnet.Overlaps(svc):
				v.r.addf(v.subnetPath(vm), "subnet %s overlaps the Service range %s (host.serviceCIDRs[%d])", vm.Net.Subnet, svc, i)
			case vm.Net.HasIPv6() && vm.Net.Subnet6.Overlaps(svc):
				v.r.addf(v.subnet6Path(vm), "subnet6 %s overlaps the Service range %s (host.serviceCIDRs[%d])", vm.Net.Subnet6, svc, i)
			}
		}
	}
	bridges := map[string]bool{}
	for _, vm := range cfg.VMs {
		bridges[vm.Net.Bridge] = true
	}
	for _, ha := range v.opts.HostAddrs {
		if bridges[ha.Interface] {
			continue
		}
		for _, vm := range cfg.VMs {
			switch {
			case ha.Prefix.Addr().Is4() && vm.Net.Subnet.IsValid() && vm.Net.Subnet.Overlaps(ha.Prefix):
				v.r.addf(v.subnetPath(vm), "subnet %s overlaps %s on the host's interface %s", vm.Net.Subnet, ha.Prefix, ha.Interface)
			case ha.Prefix.Addr().Is6() && !ha.Prefix.Addr().IsLinkLocalUnicast() && vm.Net.HasIPv6() && vm.Net.Subnet6.Overlaps(ha.Prefix):
				v.r.addf(v.subnet6Path(vm), "subnet6 %s overlaps %s on the host's interface %s", vm.Net.Subnet6, ha.Prefix, ha.Interface)
			}
		}
	}
}

// explicit6 says the file gave the VM called name its subnet6.
func (v *validator) explicit6(name string) bool {
	_, ok := v.r.lines[joinPath(joinPath("vms", name), "subnet6")]
	return ok
}

// subnet6Path is where a VM's IPv6 network came from: its subnet6 key,
// else host.ipv6Prefix (routed) or its IPv4 subnet (the ULA scheme).
func (v *validator) subnet6Path(vm *VM) string {
	if v.explicit6(vm.Name) {
		return joinPath(joinPath("vms", vm.Name), "subnet6")
	}
	if v.v6.prefix.IsValid() {
		return "host.ipv6Prefix"
	}
	return v.subnetPath(vm)
}

// subnetPath is where a VM's subnet came from: its subnet key, or its index.
func (v *validator) subnetPath(vm *VM) string {
	p := joinPath("vms", vm.Name)
	if _, ok := v.r.lines[joinPath(p, "subnet")]; ok {
		return joinPath(p, "subnet")
	}
	return joinPath(p, "index")
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	n := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	n |= host
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

func (v *validator) allows(cfg *Config, rules []Allow) []Allow {
	var out []Allow
	for i, a := range rules {
		p := indexPath("network.allow", i)
		ok := true
		for _, side := range []struct{ key, vm string }{{"from", a.From}, {"to", a.To}} {
			switch {
			case side.vm == "":
				v.r.addf(joinPath(p, side.key), "%s is required: the name of a VM", side.key)
				ok = false
			case cfg.VM(side.vm) == nil:
				v.r.addf(joinPath(p, side.key), "unknown VM %q", side.vm)
				ok = false
			}
		}
		if ok && a.From == a.To {
			v.r.addf(p, "from and to are the same VM (%s); a VM always reaches itself", a.From)
			ok = false
		}
		if len(a.Ports) == 0 {
			v.r.addf(joinPath(p, "ports"), `at least one port is required, e.g. ports: ["5432/tcp"]`)
			ok = false
		}
		if ok {
			out = append(out, a)
		}
	}
	return out
}

func (v *validator) forwards(cfg *Config, rules []Forward) []ResolvedForward {
	var out []ResolvedForward
	type key struct {
		port  int
		proto string
	}
	seen := map[key]int{}
	hostPorts := map[int]bool{}
	for _, p := range cfg.Host.AllowedTCPPorts {
		hostPorts[p] = true
	}
	for i, f := range rules {
		p := indexPath("network.forwards", i)
		rf := ResolvedForward{HostPort: f.HostPort, Proto: f.Proto}
		if rf.Proto == "" {
			rf.Proto = ProtoTCP
		}
		ok := true
		if rf.Proto != ProtoTCP && rf.Proto != ProtoUDP {
			v.r.addf(joinPath(p, "proto"), "protocol must be tcp or udp, not %q", f.Proto)
			ok = false
		}
		if f.HostPort < 1 || f.HostPort > 65535 {
			v.r.addf(joinPath(p, "hostPort"), "hostPort %d is outside 1-65535", f.HostPort)
			ok = false
		} else if j, dup := seen[key{f.HostPort, rf.Proto}]; dup {
			v.r.addf(joinPath(p, "hostPort"), "host port %d/%s is already forwarded by [%d]", f.HostPort, rf.Proto, j)
			ok = false
		} else if rf.Proto == ProtoTCP && hostPorts[f.HostPort] {
			v.r.addf(joinPath(p, "hostPort"), "host port %d is also in host.allowedTCPPorts, for the host itself", f.HostPort)
			ok = false
		} else {
			seen[key{f.HostPort, rf.Proto}] = i
		}
		vmName, portStr, found := strings.Cut(f.To, ":")
		port, err := strconv.Atoi(portStr)
		switch {
		case !found || vmName == "" || err != nil:
			v.r.addf(joinPath(p, "to"), `to must be "vm:port", not %q`, f.To)
			ok = false
		case cfg.VM(vmName) == nil:
			v.r.addf(joinPath(p, "to"), "unknown VM %q", vmName)
			ok = false
		case port < 1 || port > 65535:
			v.r.addf(joinPath(p, "to"), "port %d is outside 1-65535", port)
			ok = false
		}
		if ok {
			rf.VM, rf.Port = vmName, port
			out = append(out, rf)
		}
	}
	return out
}

// orList renders names as "a, b or c".
func orList(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}
