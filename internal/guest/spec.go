package guest

import (
	"encoding/json"
	"fmt"
	"os"
)

// SpecPath is where the per-VM spec sits in the initramfs.
const SpecPath = "etc/microvm/spec.json"

// ModulesOrderPath lists, one per line, the module files to load in order.
const ModulesOrderPath = "lib/microvm/modules.order"

// ReadyPrefix starts the line microvm-init prints on the console when the
// guest is ready: "microvm-ready vm=NAME uptime=SECONDS".
const ReadyPrefix = "microvm-ready"

// FailedPrefix starts the console line microvm-init prints when the boot
// failed: "microvm-failed vm=NAME error=…"; the guest then powers off.
const FailedPrefix = "microvm-failed"

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
	// SSH configures the built-in SSH server.
	SSH SSHSpec `json:"ssh"`
	// Workload is what runs in the VM once it is up (optional).
	Workload *Workload `json:"workload,omitempty"`
	// SwitchRoot hands PID 1 to the image's own init (/sbin/init) once the
	// root, network and volumes are set up.
	SwitchRoot bool `json:"switchRoot,omitempty"`
}

// NetSpec is the guest's static network configuration.
type NetSpec struct {
	MAC     string   `json:"mac"`
	Address string   `json:"address"` // CIDR, e.g. 10.1.0.2/24
	Gateway string   `json:"gateway"`
	DNS     []string `json:"dns,omitempty"`
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

// VolumeSpec is a data volume to mount.
type VolumeSpec struct {
	Name       string `json:"name"`
	MountPoint string `json:"mountPoint"`
	// Device names the disk directly (vdb) for hypervisors that give disks
	// no serial; empty means find it by serial = name.
	Device string `json:"device,omitempty"`
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
	// User is a user name (looked up in the root's /etc/passwd) or a uid.
	User string `json:"user,omitempty"`
}

// ReadSpec reads the spec microvm-init finds in its initramfs.
func ReadSpec(path string) (*Spec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read VM spec: %w", err)
	}
	var s Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("VM spec %s is corrupt: %w", path, err)
	}
	return &s, nil
}
