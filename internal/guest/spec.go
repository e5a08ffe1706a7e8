package guest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path"
	"regexp"
	"strings"
)

// SpecPath is where the per-VM spec sits in the initramfs.
const SpecPath = "etc/microvm/spec.json"

// ModulesOrderPath lists, one per line, the module files to load in order.
const ModulesOrderPath = "lib/microvm/modules.order"

// ModulesDepsPath lists the same modules in the same order, each followed
// by the names of the modules it needs (ModuleLine), for ModulePlan.
const ModulesDepsPath = "lib/microvm/modules.deps"

// ReadyPrefix starts the line microvm-init prints on the console when the
// guest is ready: "microvm-ready vm=NAME uptime=SECONDS".
const ReadyPrefix = "microvm-ready"

// FailedPrefix starts the console line microvm-init prints when the boot
// failed: "microvm-failed vm=NAME error=…"; the guest then powers off.
const FailedPrefix = "microvm-failed"

// ExitPrefix starts the console line microvm-init prints when the VM's
// workload has exited, before the VM powers off (a VM's life is its
// workload's): "microvm-exit vm=NAME code=N" (N is 128+signal for a
// workload killed by a signal, as a shell and Docker report it).
const ExitPrefix = "microvm-exit"

// Inits are where an image's own init is looked for (init: image), in
// order.
var Inits = []string{"/sbin/init", "/lib/systemd/systemd", "/usr/lib/systemd/systemd", "/bin/init"}

// StoreMount is where the guest mounts the store share (read-only).
const StoreMount = "/run/microvm/store"

// Spec is everything microvm-init needs to know about its VM.
type Spec struct {
	Name string `json:"name"`
	// Net configures the NIC found by MAC.
	Net NetSpec `json:"net"`
	// Store is the read-only share holding the image tree.
	Store ShareSpec `json:"store"`
	// Volumes are mounted by virtio serial = name.
	Volumes []VolumeSpec `json:"volumes,omitempty"`
	// Modules is the read-only disk of the kernel's module tree, mounted
	// at /lib/modules/$(uname -r) in the root (nil: none).
	Modules *DiskSpec `json:"modules,omitempty"`
	// SSH configures the built-in SSH server.
	SSH SSHSpec `json:"ssh"`
	// Workload is what runs in the VM once it is up (optional).
	Workload *Workload `json:"workload,omitempty"`
	// SwitchRoot hands PID 1 to the image's own init (/sbin/init) once the
	// root, network and volumes are set up.
	SwitchRoot bool `json:"switchRoot,omitempty"`
	// MachineID is the VM's stable /etc/machine-id (32 hex digits), given
	// to an image's own init.
	MachineID string `json:"machineID,omitempty"`
	// Secrets are files written into the VM's root (its memory) before
	// anything else runs there.
	Secrets []SecretFile `json:"secrets,omitempty"`
}

// SecretFile is a decrypted secret and where it goes in the guest.
type SecretFile struct {
	// Path is absolute in the guest's root, never on a volume.
	Path string `json:"path"`
	// Mode is the file's permission bits.
	Mode uint32 `json:"mode"`
	// Owner is a user name or uid of the image ("" = root).
	Owner string `json:"owner,omitempty"`
	// Data is the plaintext.
	Data []byte `json:"data"`
}

// NetSpec is the guest's static network configuration.
type NetSpec struct {
	MAC     string   `json:"mac"`
	Address string   `json:"address"` // CIDR, e.g. 10.1.0.2/24
	Gateway string   `json:"gateway"`
	DNS     []string `json:"dns,omitempty"`
	// Search are the resolver's search domains (the VMs' domain, so that
	// another VM is reached by its bare name).
	Search []string `json:"search,omitempty"`
	// Address6 (CIDR, a /64) and Gateway6 are the VM's IPv6 address and
	// default gateway; empty without IPv6.
	Address6 string `json:"address6,omitempty"`
	Gateway6 string `json:"gateway6,omitempty"`
}

// ShareSpec is a directory share from the host.
type ShareSpec struct {
	Tag    string `json:"tag"`
	FSType string `json:"fstype"` // "9p", "virtiofs" or "ext4" (a read-only disk)
	// Serial finds the disk of an ext4 store by its virtio serial.
	Serial string `json:"serial,omitempty"`
	// Device names the disk of an ext4 store directly (vda) for
	// hypervisors that give disks no serial.
	Device string `json:"device,omitempty"`
	// Image is the image tree's path inside the share ("" = the share's root).
	Image string `json:"image,omitempty"`
}

// DiskSpec finds one of microvm's own disks: by virtio serial, or by its
// device name (vdc) for hypervisors that give disks no serial.
type DiskSpec struct {
	Serial string `json:"serial"`
	Device string `json:"device,omitempty"`
}

// ModulesMount is where microvm-init mounts the kernel's module tree
// (Spec.Modules) before binding it into the root.
const ModulesMount = "/run/microvm/modules"

// VolumeSpec is a data volume to mount.
type VolumeSpec struct {
	Name       string `json:"name"`
	MountPoint string `json:"mountPoint"`
	// Device names the disk directly (vdb) for hypervisors that give disks
	// no serial; empty means find it by serial = name.
	Device string `json:"device,omitempty"`
	// Populate says the volume was just created: its mount point's content
	// in the image is copied onto it before anything runs (as Docker
	// initialises a new named volume).
	Populate bool `json:"populate,omitempty"`
}

// SSHSpec is the SSH server's identity and who may log in.
type SSHSpec struct {
	// HostKey is the server's private key (OpenSSH PEM), generated once per VM
	// on the host so the VM's identity survives reboots.
	HostKey string `json:"hostKey"`
	// AuthorizedKeys are the keys allowed to log in as root.
	AuthorizedKeys []string `json:"authorizedKeys"`
}

// Workload is a process run in the VM's root.
type Workload struct {
	Command []string          `json:"command"`
	Env     map[string]string `json:"env,omitempty"`
	Workdir string            `json:"workdir,omitempty"`
	// User is who it runs as, as Docker takes it: a name or uid, with an
	// optional group name or gid after a colon (name, uid, uid:gid,
	// name:group), looked up in the root's /etc/passwd and /etc/group; the
	// user's supplementary groups come along.
	User string `json:"user,omitempty"`
	// StopSignal is sent to the workload first when the VM stops (default
	// SIGTERM), as the image's config says.
	StopSignal string `json:"stopSignal,omitempty"`
}

// WorkloadExit is a VM's end by its workload's exit, read from the
// console's ExitPrefix line.
type WorkloadExit struct {
	// Code is the exit status (128+signal for a signal).
	Code int
}

func (e *WorkloadExit) Error() string {
	return fmt.Sprintf("the workload exited with status %d", e.Code)
}

// ExitLine is the console line that reports a workload's exit.
func ExitLine(vm string, code int) string {
	return fmt.Sprintf("%s vm=%s code=%d", ExitPrefix, vm, code)
}

// ParseExitLine reads a line made by ExitLine.
func ParseExitLine(line string) (*WorkloadExit, bool) {
	i := strings.Index(line, ExitPrefix+" ")
	if i < 0 {
		return nil, false
	}
	for _, f := range strings.Fields(line[i+len(ExitPrefix):]) {
		if v, ok := strings.CutPrefix(f, "code="); ok {
			var code int
			if _, err := fmt.Sscanf(v, "%d", &code); err == nil {
				return &WorkloadExit{Code: code}, true
			}
		}
	}
	return nil, false
}

// ReadSpec reads the spec microvm-init finds in its initramfs.
func ReadSpec(path string) (*Spec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read VM spec: %w", err)
	}
	s, err := ParseSpec(b)
	if err != nil {
		return nil, fmt.Errorf("VM spec %s: %w", path, err)
	}
	return s, nil
}

var (
	specNameRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	deviceRE    = regexp.MustCompile(`^vd[a-z]{1,3}$`)
	machineIDRE = regexp.MustCompile(`^[0-9a-f]{32}$`)
)

// ParseSpec decodes and checks a spec. microvm-init runs as PID 1 with it,
// mounting, configuring the network and starting processes, so anything
// that could make it act outside what the spec means is refused: unknown
// store filesystems, device names other than virtio disks, mount points
// that are not clean absolute paths, addresses that do not parse.
func ParseSpec(b []byte) (*Spec, error) {
	var s Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("corrupt: %w", err)
	}
	if !specNameRE.MatchString(s.Name) {
		return nil, fmt.Errorf("name %q is not a VM name", s.Name)
	}
	if _, err := net.ParseMAC(s.Net.MAC); err != nil {
		return nil, fmt.Errorf("net.mac: %w", err)
	}
	pfx, err := netip.ParsePrefix(s.Net.Address)
	if err != nil || !pfx.Addr().Is4() {
		return nil, fmt.Errorf("net.address %q is not an IPv4 address with its prefix", s.Net.Address)
	}
	if gw, err := netip.ParseAddr(s.Net.Gateway); err != nil || !pfx.Masked().Contains(gw) {
		return nil, fmt.Errorf("net.gateway %q is not an address of %s", s.Net.Gateway, pfx.Masked())
	}
	for _, d := range s.Net.DNS {
		if _, err := netip.ParseAddr(d); err != nil {
			return nil, fmt.Errorf("net.dns %q is not an address", d)
		}
	}
	if s.Net.Address6 != "" || s.Net.Gateway6 != "" {
		p6, err := netip.ParsePrefix(s.Net.Address6)
		if err != nil || !p6.Addr().Is6() {
			return nil, fmt.Errorf("net.address6 %q is not an IPv6 address with its prefix", s.Net.Address6)
		}
		if gw, err := netip.ParseAddr(s.Net.Gateway6); err != nil || !p6.Masked().Contains(gw) {
			return nil, fmt.Errorf("net.gateway6 %q is not an address of %s", s.Net.Gateway6, p6.Masked())
		}
	}
	for _, d := range s.Net.Search {
		if d == "" || strings.ContainsAny(d, " \t\n") {
			return nil, fmt.Errorf("net.search %q is not a domain", d)
		}
	}
	switch s.Store.FSType {
	case "", "9p", "virtiofs":
	case "ext4":
		if s.Store.Device != "" && !deviceRE.MatchString(s.Store.Device) {
			return nil, fmt.Errorf("store.device %q is not a virtio disk", s.Store.Device)
		}
	default:
		return nil, fmt.Errorf("store.fstype %q is not 9p, virtiofs or ext4", s.Store.FSType)
	}
	if m := s.Modules; m != nil && (m.Serial == "" || m.Device != "" && !deviceRE.MatchString(m.Device)) {
		return nil, fmt.Errorf("modules: serial %q device %q is not a virtio disk", m.Serial, m.Device)
	}
	if s.MachineID != "" && !machineIDRE.MatchString(s.MachineID) {
		return nil, fmt.Errorf("machineID %q is not 32 hex digits", s.MachineID)
	}
	if s.Store.Image != "" && !cleanRelative(s.Store.Image) {
		return nil, fmt.Errorf("store.image %q leaves the store", s.Store.Image)
	}
	for i, v := range s.Volumes {
		if v.Name == "" || strings.ContainsAny(v.Name, "/\x00") {
			return nil, fmt.Errorf("volumes[%d].name %q", i, v.Name)
		}
		if !path.IsAbs(v.MountPoint) || path.Clean(v.MountPoint) != v.MountPoint || v.MountPoint == "/" {
			return nil, fmt.Errorf("volumes[%d].mountPoint %q is not a clean absolute path below /", i, v.MountPoint)
		}
		if v.Device != "" && !deviceRE.MatchString(v.Device) {
			return nil, fmt.Errorf("volumes[%d].device %q is not a virtio disk", i, v.Device)
		}
	}
	for i, f := range s.Secrets {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || f.Path == "/" || f.Mode > 0o777 {
			return nil, fmt.Errorf("secrets[%d]: path %q mode %o", i, f.Path, f.Mode)
		}
		for _, v := range s.Volumes {
			if strings.HasPrefix(f.Path, strings.TrimSuffix(v.MountPoint, "/")+"/") {
				return nil, fmt.Errorf("secrets[%d]: %s is on the volume %s", i, f.Path, v.Name)
			}
		}
	}
	if w := s.Workload; w != nil {
		if len(w.Command) == 0 || w.Command[0] == "" {
			return nil, errors.New("workload.command is empty")
		}
		if w.Workdir != "" && !path.IsAbs(w.Workdir) {
			return nil, fmt.Errorf("workload.workdir %q is not absolute", w.Workdir)
		}
		for k := range w.Env {
			if k == "" || strings.ContainsAny(k, "=\x00") {
				return nil, fmt.Errorf("workload.env %q is not a variable name", k)
			}
		}
		if w.StopSignal != "" {
			if _, err := ParseSignal(w.StopSignal); err != nil {
				return nil, fmt.Errorf("workload.stopSignal: %w", err)
			}
		}
	}
	return &s, nil
}

// cleanRelative reports whether p is a relative path that stays inside.
func cleanRelative(p string) bool {
	return !path.IsAbs(p) && path.Clean(p) == p && p != ".." && !strings.HasPrefix(p, "../")
}
