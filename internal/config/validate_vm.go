package config

import (
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"golang.org/x/crypto/ssh"

	"microvm.dev/microvm/internal/secrets"
)

// The checks of one VM (and of the defaults): its keys, volumes, user,
// image and secrets.

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
	if m := vm.Supervision.MemoryMin; m > vm.Memory {
		v.r.addf(joinPath(p, "memoryMin"), "memoryMin %s is more than memory %s: the host can only take back memory the VM has", m, vm.Memory)
	}
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
	v.machine(p, s)
	v.volumes(joinPath(p, "volumes"), s.Volumes)
	v.secrets(joinPath(p, "secrets"), s.Secrets)
	v.workload(p, s)
	v.supervision(p, s)
}

// machine checks what the VM is: its hypervisor, vCPUs, memory, kernel,
// image, its signature policy, init, store, pull policy and host.
func (v *validator) machine(p string, s *VMSpec) {
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
	if s.MemoryMin != nil && *s.MemoryMin < MinMemory {
		v.r.addf(joinPath(p, "memoryMin"), "memoryMin %s is below the minimum of %s: a guest needs room to run", s.MemoryMin, MinMemory)
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
	if s.Host != nil && !hostNameRE.MatchString(*s.Host) {
		v.r.addf(joinPath(p, "host"), "host %q is not a host name", *s.Host)
	}
	v.imagePolicy(joinPath(p, "imagePolicy"), s.ImagePolicy)
	v.registries(joinPath(p, "registries"), s.Registries)
	if s.PullPolicy != nil && *s.PullPolicy != PullMissing && *s.PullPolicy != PullAlways && *s.PullPolicy != PullNever {
		v.r.addf(joinPath(p, "pullPolicy"), "pullPolicy must be missing, always or never, not %q", *s.PullPolicy)
	}
	if s.Init != nil && *s.Init != InitMicrovm && *s.Init != InitImage {
		v.r.addf(joinPath(p, "init"), "init must be microvm or image, not %q", *s.Init)
	}
	if s.Store != nil && !slices.Contains(StoreKinds, *s.Store) {
		v.r.addf(joinPath(p, "store"), "store must be one of %s, not %q", strings.Join(StoreKinds, ", "), *s.Store)
	}
}

// workload checks what the VM runs and how it is reached: its command,
// environment, working directory, user, SSH keys and ports.
func (v *validator) workload(p string, s *VMSpec) {
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

// supervision checks how the VM is kept: restart policy, stop timeout,
// limits, health check and snapshots.
func (v *validator) supervision(p string, s *VMSpec) {
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
		v.backup(joinPath(p, "snapshots.backup"), sn.Backup)
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
	case IsReference(ref):
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
