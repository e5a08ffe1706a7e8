package config

import (
	"time"

	"github.com/invopop/jsonschema"
	"go.yaml.in/yaml/v3"
)

// File is the config file as written: host settings, defaults merged into
// every VM, the VMs by name, and the network exceptions.
type File struct {
	// Host holds settings of the machine the fleet runs on.
	Host Host `yaml:"host,omitempty" json:"host,omitempty"`
	// Defaults are merged into every VM; a VM's own keys win (lists replace, maps merge).
	Defaults VMSpec `yaml:"defaults,omitempty" json:"defaults,omitempty"`
	// VMs maps each VM's name to its settings. The name becomes the hostname and
	// part of the interface names br-<name> and vm-<name>, so it is at most 12 bytes.
	VMs map[string]VMSpec `yaml:"vms" json:"vms" jsonschema:"required"`
	// Network holds the exceptions to VM isolation and the host port forwards.
	Network Network `yaml:"network,omitempty" json:"network,omitempty"`
	// Peers are the hosts whose daemons move VMs to each other (microvm
	// move, drain), by the host names VMs give in host: each daemon's
	// peer address and the key it is known by.
	Peers map[string]Peer `yaml:"peers,omitempty" json:"peers,omitempty"`
}

// Peer is another host's daemon, as this one reaches and trusts it.
type Peer struct {
	// Address is the daemon's --peer-listen address, host:port.
	Address string `yaml:"address" json:"address"`
	// Key is "sha256:" and the hex SHA-256 of its public key, as `microvm
	// peer key` prints it there: the only key that host is trusted by.
	Key string `yaml:"key" json:"key"`
}

// Host holds settings of the hypervisor host.
type Host struct {
	// ExternalInterface is the NAT uplink; "auto" (the default) uses the
	// interface of the default route.
	ExternalInterface string `yaml:"externalInterface,omitempty" json:"externalInterface,omitempty"`
	// AllowedTCPPorts are the host's own TCP ports open on its uplink (the host
	// input firewall). Unset leaves the host's input policy alone.
	AllowedTCPPorts []int `yaml:"allowedTCPPorts,omitempty" json:"allowedTCPPorts,omitempty"`
	// Tailscale configures subnet routing over the tailnet.
	Tailscale Tailscale `yaml:"tailscale,omitempty" json:"tailscale,omitempty"`
	// DNS are the resolvers the VMs' DNS server (on each gateway) forwards
	// names outside the VMs' domain to: addresses or address:port. Unset:
	// the host's own, from /etc/resolv.conf.
	DNS []string `yaml:"dns,omitempty" json:"dns,omitempty"`
	// IPv6Prefix is where the VMs' IPv6 networks come from: unset, a
	// unique local prefix (fd6d:6963::/32, each VM's /64 made of its IPv4
	// subnet) behind NAT66; a prefix routed to the host (/48 to /56: VM n
	// gets its n-th /64, routed without NAT); or "none" for IPv4 only.
	IPv6Prefix string `yaml:"ipv6Prefix,omitempty" json:"ipv6Prefix,omitempty"`
	// ServiceCIDRs are the Kubernetes Service ranges of the cluster the
	// host is a node of (kube-apiserver's --service-cluster-ip-range): a
	// VM's connection to an address in them that the host's kube-proxy
	// translated (DNAT) to another VM passes the VM isolation. Unset: no
	// such exception.
	ServiceCIDRs []string `yaml:"serviceCIDRs,omitempty" json:"serviceCIDRs,omitempty"`
	// Reclaim takes memory back from VMs when the host runs short: while
	// its available memory is below Below, each VM with a memoryMin is
	// ballooned down to it; once it is above Above again, the balloons
	// are deflated. Unset: off, no VM's memory is ever taken back.
	Reclaim *Reclaim `yaml:"reclaim,omitempty" json:"reclaim,omitempty"`
	// KSM turns the host's kernel samepage merging on, so identical pages
	// of VMs' memory (the same kernel and image in many guests) are kept
	// once. Unset: the host's KSM is left as it is.
	KSM *KSM `yaml:"ksm,omitempty" json:"ksm,omitempty"`
	// Registries are the logins the host pulls with, by registry host
	// (host or host:port, as in image references): {username, password},
	// the password age-encrypted. The docker config file
	// (~/.docker/config.json) still serves registries not named here.
	Registries map[string]RegistryAuth `yaml:"registries,omitempty" json:"registries,omitempty"`
}

// Reclaim is when the host takes memory back from VMs with a memoryMin
// (their balloon inflated down to it) and when it gives it back.
type Reclaim struct {
	// Below is the host's available memory (MemAvailable) under which
	// memory is taken back.
	Below Size `yaml:"below" json:"below"`
	// Above is the available memory over which it is given back (default
	// twice Below): the gap keeps the balloons from flapping.
	Above Size `yaml:"above,omitempty" json:"above,omitempty"`
}

// ReleaseAbove is Above, or twice Below.
func (r Reclaim) ReleaseAbove() Size {
	if r.Above == 0 {
		return 2 * r.Below
	}
	return r.Above
}

// KSM is the host's kernel samepage merging, as the daemon sets it.
type KSM struct {
	// Enabled turns it on (/sys/kernel/mm/ksm/run).
	Enabled bool `yaml:"enabled" json:"enabled"`
	// PagesToScan is how many pages it scans each time it wakes (default
	// 1000; the kernel's own is 100).
	PagesToScan int `yaml:"pagesToScan,omitempty" json:"pagesToScan,omitempty" jsonschema:"minimum=0"`
	// Sleep is how long it sleeps between scans (default 20ms).
	Sleep Duration `yaml:"sleep,omitempty" json:"sleep,omitempty"`
}

// Default KSM settings.
const (
	DefaultKSMPagesToScan = 1000
	DefaultKSMSleep       = Duration(20 * time.Millisecond)
)

// Tailscale configures the host's tailnet integration.
type Tailscale struct {
	// AdvertiseRoutes keeps the host's advertised routes equal to the VM subnets.
	AdvertiseRoutes bool `yaml:"advertiseRoutes,omitempty" json:"advertiseRoutes,omitempty"`
	// Socket is tailscaled's LocalAPI socket, an absolute path. Unset: the
	// tailscale command's default (/var/run/tailscale/tailscaled.sock).
	Socket string `yaml:"socket,omitempty" json:"socket,omitempty"`
	// Interface is tailscaled's TUN device, through which the tailnet
	// reaches the VMs (default tailscale0, as `tailscaled --tun` names it).
	Interface string `yaml:"interface,omitempty" json:"interface,omitempty"`
	// Port is tailscaled's WireGuard UDP port (its --port; default 41641,
	// as Tailscale's packages start it), opened on the uplink when
	// allowedTCPPorts filters it, so peers behind hard NATs connect
	// directly instead of through a DERP relay.
	Port int `yaml:"port,omitempty" json:"port,omitempty" jsonschema:"minimum=1,maximum=65535"`
}

// DefaultTailscalePort is tailscaled's port in Tailscale's packages.
const DefaultTailscalePort = 41641

// UDPPort is tailscaled's port: Port, or DefaultTailscalePort.
func (t Tailscale) UDPPort() int {
	if t.Port == 0 {
		return DefaultTailscalePort
	}
	return t.Port
}

// TUN is tailscaled's interface: Interface, or tailscale0.
func (t Tailscale) TUN() string {
	if t.Interface == "" {
		return "tailscale0"
	}
	return t.Interface
}

// VMSpec is one VM as written (or the defaults). Unset keys are nil so the
// merge with defaults can tell "not written" from "written as zero".
type VMSpec struct {
	// Index numbers the VM: it gives the subnet 10.<index>.0.0/24 (unless
	// subnet is set) and the MAC 02:00:00:00:00:<index>. 1-255.
	Index *int `yaml:"index,omitempty" json:"index,omitempty" jsonschema:"minimum=1,maximum=255"`
	// Subnet is the VM's IPv4 network in CIDR form; the host takes the first
	// address (the gateway, .1) and the VM the second (.2).
	Subnet *string `yaml:"subnet,omitempty" json:"subnet,omitempty"`
	// Subnet6 is the VM's IPv6 network, a /64; the host takes ::1 (the
	// gateway) and the VM ::2. Unset: derived from host.ipv6Prefix.
	Subnet6 *string `yaml:"subnet6,omitempty" json:"subnet6,omitempty"`
	// Hypervisor is the VMM backend: qemu (default), cloud-hypervisor or firecracker.
	Hypervisor *string `yaml:"hypervisor,omitempty" json:"hypervisor,omitempty"`
	// VCPU is the number of virtual CPUs (default 1).
	VCPU *int `yaml:"vcpu,omitempty" json:"vcpu,omitempty" jsonschema:"minimum=1"`
	// Memory is the guest RAM (default 512M, at least 128M).
	Memory *Size `yaml:"memory,omitempty" json:"memory,omitempty"`
	// MemoryMin is as far as the host may take the VM's memory back when
	// it runs short (host.reclaim), by inflating its balloon; unset: never.
	// The guest then has MemoryMin to run in: a workload that needs more
	// swaps, or has the guest's OOM killer pick a process.
	MemoryMin *Size `yaml:"memoryMin,omitempty" json:"memoryMin,omitempty"`
	// Kernel is "host" (the host's running kernel and its modules, the default)
	// or {path, modules} for a given one.
	Kernel *Kernel `yaml:"kernel,omitempty" json:"kernel,omitempty"`
	// KernelParams are added to the guest kernel's command line after
	// microvm's own (e.g. apparmor=0, mitigations=off), one parameter an
	// item. Parameters microvm sets itself (console=, panic=, reboot=,
	// tsc=, tsc_early_khz=, microvm.*, the root and init arguments) are
	// refused. A change restarts the VM.
	KernelParams []string `yaml:"kernelParams,omitempty" json:"kernelParams,omitempty"`
	// Image is the root image: a store image name or an OCI reference (default "base").
	Image *string `yaml:"image,omitempty" json:"image,omitempty"`
	// Volumes are persistent data volumes (sparse ext4 images), created on
	// first start and never deleted by a config change.
	Volumes []Volume `yaml:"volumes,omitempty" json:"volumes,omitempty"`
	// SSHKeys are authorized keys for root, in authorized_keys format.
	SSHKeys []string `yaml:"sshKeys,omitempty" json:"sshKeys,omitempty"`
	// Secrets are files the VM is given from age-encrypted secrets kept in
	// this file (ciphertext only), decrypted on the host with its age
	// identity or SSH host key and held in the guest's memory.
	Secrets []Secret `yaml:"secrets,omitempty" json:"secrets,omitempty"`
	// Ports the VM serves, reachable from the host and the tailnet.
	Ports []Port `yaml:"ports,omitempty" json:"ports,omitempty"`
	// Egress is where the VM may connect beyond the VM networks: "none", or
	// {internet, allow, deny} (see network.egress).
	Egress *Egress `yaml:"egress,omitempty" json:"egress,omitempty"`
	// Command is the workload: argv, or one string run by /bin/sh -c. It runs
	// in the VM's root once the VM is up, its output on the serial console.
	Command []string `yaml:"command,omitempty" json:"command,omitempty"`
	// Args are the workload's arguments, as a container's args: they
	// follow command, or replace the image's cmd after its entrypoint when
	// command is unset.
	Args []string `yaml:"args,omitempty" json:"args,omitempty"`
	// Env is the workload's environment; merged key by key with the defaults'.
	Env map[string]string `yaml:"env,omitempty" json:"env,omitempty"`
	// Workdir is the workload's working directory (default /root or /).
	Workdir *string `yaml:"workdir,omitempty" json:"workdir,omitempty"`
	// User runs the workload as this user, as docker run --user takes it:
	// a name or uid, optionally with a group name or gid after a colon
	// (name, uid, uid:gid, name:group), looked up in the image (default root).
	User *string `yaml:"user,omitempty" json:"user,omitempty"`
	// Init is who runs as PID 1 once the VM is set up: "microvm" (the default:
	// microvm-init stays, serving SSH and the workload) or "image" (the
	// image's own /sbin/init takes over by switch_root, e.g. for systemd
	// images; it then owns SSH and shutdown).
	Init *string `yaml:"init,omitempty" json:"init,omitempty" jsonschema:"enum=microvm,enum=image"`
	// Store is how the VM's root image reaches it: auto (the default: the
	// host's choice, virtiofs where a virtiofsd is installed), virtiofs, 9p,
	// or block (a read-only ext4 disk). Only a block store lets QEMU save
	// the VM's state (stop --save): QEMU cannot migrate a guest with a
	// virtiofs device or a mounted 9p export.
	Store *string `yaml:"store,omitempty" json:"store,omitempty" jsonschema:"enum=auto,enum=virtiofs,enum=9p,enum=block"`
	// Autostart says whether the daemon starts the VM (default true).
	Autostart *bool `yaml:"autostart,omitempty" json:"autostart,omitempty"`
	// Restart is the daemon's policy when the VM's hypervisor exits on its
	// own: always (default), on-failure or no. Restarts back off
	// exponentially; a crash loop leaves the VM failed.
	Restart *string `yaml:"restart,omitempty" json:"restart,omitempty" jsonschema:"enum=always,enum=on-failure,enum=no"`
	// StopTimeout is how long a clean shutdown may take before the
	// hypervisor is killed (default 30s).
	StopTimeout *Duration `yaml:"stopTimeout,omitempty" json:"stopTimeout,omitempty"`
	// PullPolicy says when an image given as an OCI reference is pulled:
	// missing (default: when the store does not have it), always (at every
	// start, to follow a moving tag) or never (it must have been pulled).
	PullPolicy *string `yaml:"pullPolicy,omitempty" json:"pullPolicy,omitempty" jsonschema:"enum=missing,enum=always,enum=never"`
	// ImagePolicy is which cosign signatures an image from a registry
	// must carry before it is pulled and booted: {keys: [PEM or path],
	// allowLocal}. Unset: none are checked. A change restarts nothing.
	ImagePolicy *ImagePolicy `yaml:"imagePolicy,omitempty" json:"imagePolicy,omitempty"`
	// Registries are logins for this VM's pulls only, by registry host as
	// in host.registries, laid over the host's (a pod's imagePullSecrets
	// reach its VM this way). Merged key by key with the defaults'. A
	// change restarts nothing.
	Registries map[string]RegistryAuth `yaml:"registries,omitempty" json:"registries,omitempty"`
	// Host names the hypervisor host that runs the VM when one repository
	// drives several: each daemon applies only its own VMs. Either every VM
	// names its host or none does.
	Host *string `yaml:"host,omitempty" json:"host,omitempty"`
	// HealthCheck is checked from the host after a deploy starts the VM:
	// {tcp: PORT} connects, {http: PORT, path: /healthz} expects a 2xx or 3xx.
	HealthCheck *HealthCheck `yaml:"healthCheck,omitempty" json:"healthCheck,omitempty"`
	// Snapshots sets the retention and schedule of volume snapshots.
	Snapshots *Snapshots `yaml:"snapshots,omitempty" json:"snapshots,omitempty"`
	// Limits caps the VM's hypervisor process with cgroups (unset: no caps).
	Limits *Limits `yaml:"limits,omitempty" json:"limits,omitempty"`
	// Template makes the VM a template: it is not run itself; the daemon
	// boots it once, waits until it is ready (and its healthCheck passes),
	// and saves it, and VMs with from: NAME start from that saved state
	// instead of booting (docs/clones.md). It needs qemu and store: block.
	Template *bool `yaml:"template,omitempty" json:"template,omitempty"`
	// From names the template this VM is a clone of: it runs the template's
	// machine and workload as saved, with its own name, network, SSH host
	// key, machine-id and random seed. A clone may set only index, subnet,
	// subnet6, ports, egress, sshKeys, healthCheck, host and how the daemon
	// keeps it (autostart, restart, stopTimeout); the rest is the template's.
	From *string `yaml:"from,omitempty" json:"from,omitempty"`
	// Pool keeps this many clones of a template started and ready, each
	// handed out by microvm take (and replaced at once). A supervision
	// setting; 0 (the default): none.
	Pool *int `yaml:"pool,omitempty" json:"pool,omitempty" jsonschema:"minimum=0,maximum=64"`
}

// Snapshots are the volume snapshot settings of a VM.
type Snapshots struct {
	// Keep is how many snapshots of each volume are kept (0: all).
	Keep int `yaml:"keep,omitempty" json:"keep,omitempty" jsonschema:"minimum=0"`
	// Every takes a snapshot of every volume this often (unset: only by hand).
	Every Duration `yaml:"every,omitempty" json:"every,omitempty"`
	// Backup sends every snapshot off the host, to a restic repository.
	Backup *Backup `yaml:"backup,omitempty" json:"backup,omitempty"`
}

// Backup is where a VM's volume snapshots are sent off the host: a restic
// repository (docs/operations.md, "Backups off the host").
type Backup struct {
	// Repository is restic's repository: a local path (a mounted disk),
	// sftp:user@host:/path, s3:https://host/bucket, rest:https://….
	Repository string `yaml:"repository" json:"repository"`
	// Password is the repository's password, age-encrypted to the hosts
	// (microvm secret encrypt): restic encrypts every backup with it.
	Password string `yaml:"password" json:"password"`
	// Keep is how many backups of each volume the repository keeps
	// (restic forget --keep-last; 0: all).
	Keep int `yaml:"keep,omitempty" json:"keep,omitempty" jsonschema:"minimum=0"`
	// Env is more environment for restic, each value age-encrypted: an S3
	// repository's AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, say.
	Env map[string]string `yaml:"env,omitempty" json:"env,omitempty"`
}

// HealthCheck is a check made from the host once the VM is ready.
type HealthCheck struct {
	// TCP is a port that must accept a connection.
	TCP int `yaml:"tcp,omitempty" json:"tcp,omitempty" jsonschema:"minimum=1,maximum=65535"`
	// HTTP is a port that must answer GET Path with a 2xx or 3xx status.
	HTTP int `yaml:"http,omitempty" json:"http,omitempty" jsonschema:"minimum=1,maximum=65535"`
	// Path is the HTTP check's path (default /).
	Path string `yaml:"path,omitempty" json:"path,omitempty"`
}

// Limits are cgroup caps on a VM's hypervisor process. Each is optional.
type Limits struct {
	// CPUWeight is the VMM's share of CPU time under contention, 1-10000
	// (cgroup cpu.weight; every other process has 100).
	CPUWeight int `yaml:"cpuWeight,omitempty" json:"cpuWeight,omitempty" jsonschema:"minimum=1,maximum=10000"`
	// CPUs caps the VMM's CPU time at this many host CPUs (cgroup cpu.max), e.g. 1.5.
	CPUs float64 `yaml:"cpus,omitempty" json:"cpus,omitempty" jsonschema:"exclusiveMinimum=0"`
	// Memory caps the VMM process's memory (cgroup memory.max); it must leave
	// room for the hypervisor: at least the VM's memory plus 64M.
	Memory Size `yaml:"memory,omitempty" json:"memory,omitempty"`
}

// Volume is a persistent data volume of a VM.
type Volume struct {
	// Name identifies the volume: the image file <name>.img, the ext4 label
	// and the virtio serial the guest finds it by (at most 20 bytes).
	Name string `yaml:"name" json:"name" jsonschema:"required"`
	// MountPoint is the absolute path the guest mounts the volume at.
	MountPoint string `yaml:"mountPoint" json:"mountPoint" jsonschema:"required"`
	// Size of the sparse image (at least 1M). Growing it grows the volume;
	// shrinking is refused.
	Size Size `yaml:"size" json:"size" jsonschema:"required"`
}

// Secret is one file a VM is given from an age-encrypted secret.
type Secret struct {
	// Path is the absolute path of the file in the guest. It lives in the
	// guest's memory: a path on a data volume is refused.
	Path string `yaml:"path" json:"path" jsonschema:"required"`
	// Mode is the file's permission bits in octal (default "0400").
	Mode string `yaml:"mode,omitempty" json:"mode,omitempty" jsonschema:"pattern=^0?[0-7]{3}$"`
	// Owner is the user (name or uid, from the image's /etc/passwd) that
	// owns the file (default root).
	Owner string `yaml:"owner,omitempty" json:"owner,omitempty"`
	// Age is the secret as an ASCII-armored age file, encrypted to the
	// host's key: microvm secret encrypt --to-host FILE on the host, or
	// age -a -r RECIPIENT.
	Age string `yaml:"age" json:"age" jsonschema:"required"`
}

// Kernel selects the guest kernel.
type Kernel struct {
	// Path is the kernel image; empty means the host's running kernel.
	Path string `yaml:"path,omitempty" json:"path,omitempty"`
	// Modules is the modules directory matching Path (the one holding modules.dep).
	Modules string `yaml:"modules,omitempty" json:"modules,omitempty"`
}

// IsHost reports whether the kernel is the host's own.
func (k Kernel) IsHost() bool { return k.Path == "" }

// String names the kernel as the file would.
func (k Kernel) String() string {
	if k.IsHost() {
		return "host"
	}
	return k.Path
}

func (k *Kernel) decodeYAML(d *decoder, n *yaml.Node, path string) {
	if n.Kind == yaml.ScalarNode {
		if n.ShortTag() == "!!str" && n.Value == "host" {
			*k = Kernel{}
			return
		}
		d.wrongType(n, path, `"host" or a mapping {path, modules}`)
		return
	}
	type plain Kernel // no decodeYAML: decoded field by field
	var p plain
	d.decodeStruct(n, reflectValueOf(&p), path)
	*k = Kernel(p)
	if k.Path == "" {
		d.r.addAt(n.Line, joinPath(path, "path"), `a kernel mapping needs path (or write kernel: host)`)
	}
}

// JSONSchema describes Kernel for editors.
func (Kernel) JSONSchema() *jsonschema.Schema {
	props := jsonschema.NewProperties()
	props.Set("path", &jsonschema.Schema{Type: "string", Description: "The kernel image."})
	props.Set("modules", &jsonschema.Schema{Type: "string", Description: "The modules directory matching path (holding modules.dep)."})
	return &jsonschema.Schema{
		OneOf: []*jsonschema.Schema{
			{Type: "string", Enum: []any{"host"}},
			{Type: "object", Properties: props, Required: []string{"path"}, AdditionalProperties: jsonschema.FalseSchema},
		},
		Description: `"host" for the host's running kernel, or {path, modules}.`,
	}
}

// Network holds the exceptions to isolation and the host port forwards.
type Network struct {
	// Allow lists the traffic permitted between VMs; everything else between
	// VMs is dropped.
	Allow []Allow `yaml:"allow,omitempty" json:"allow,omitempty"`
	// Forwards map host ports to VM ports.
	Forwards []Forward `yaml:"forwards,omitempty" json:"forwards,omitempty"`
	// Egress is where every VM may connect beyond the VM networks.
	Egress Egress `yaml:"egress,omitempty" json:"egress,omitempty"`
	// Domain is the VMs' DNS domain: each VM is <name>.<domain> to the
	// others and to the host (default microvm.internal).
	Domain string `yaml:"domain,omitempty" json:"domain,omitempty"`
}

// Allow permits new connections from one VM to ports of another (replies flow back).
type Allow struct {
	// From is the VM that opens the connection.
	From string `yaml:"from" json:"from" jsonschema:"required"`
	// To is the VM that accepts it.
	To string `yaml:"to" json:"to" jsonschema:"required"`
	// Ports of To that From may reach, e.g. "5432/tcp".
	Ports []Port `yaml:"ports" json:"ports" jsonschema:"required"`
}

// Forward sends a host port to a port of a VM.
type Forward struct {
	// HostPort is the port on the host.
	HostPort int `yaml:"hostPort" json:"hostPort" jsonschema:"required,minimum=1,maximum=65535"`
	// To is "vm:port".
	To string `yaml:"to" json:"to" jsonschema:"required"`
	// Proto is tcp (default) or udp.
	Proto string `yaml:"proto,omitempty" json:"proto,omitempty" jsonschema:"enum=tcp,enum=udp"`
}
