package config

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"time"
)

// Built-in defaults, used where neither a VM nor the defaults: section sets a key.
const (
	DefaultHypervisor        = HypervisorQEMU
	DefaultVCPU              = 1
	DefaultMemory            = 512 * MiB
	DefaultImage             = "base"
	DefaultExternalInterface = "auto"
	DefaultDomain            = "microvm.internal"
)

// StoreKinds are the values of VMSpec.Store.
var StoreKinds = []string{"auto", "virtiofs", "9p", "block"}

// Who runs as PID 1 in a VM (VMSpec.Init).
const (
	InitMicrovm = "microvm"
	InitImage   = "image"
)

// The hypervisor backends a VM may name (vms.*.hypervisor). This is the one
// list of their names: validation, the JSON Schema, the backend registry
// (internal/vmm/backends) and verify's hints all read it.
const (
	HypervisorQEMU            = "qemu"
	HypervisorCloudHypervisor = "cloud-hypervisor"
	HypervisorFirecracker     = "firecracker"
)

// Hypervisors lists the backends' names, the default first.
func Hypervisors() []string {
	return []string{HypervisorQEMU, HypervisorCloudHypervisor, HypervisorFirecracker}
}

// Config is a validated file with defaults merged and addressing derived.
type Config struct {
	// Host holds the host settings with defaults applied.
	Host Host `json:"host"`
	// VMs are the VMs sorted by name.
	VMs []*VM `json:"vms"`
	// Allow lists the permitted VM-to-VM flows.
	Allow []Allow `json:"allow,omitempty"`
	// Forwards lists the host port forwards, resolved to VM and port.
	Forwards []ResolvedForward `json:"forwards,omitempty"`
	// Egress is where every VM may connect beyond the VM networks.
	Egress Egress `json:"egress,omitzero"`
	// Domain is the VMs' DNS domain (network.domain, lower case).
	Domain string `json:"domain"`
	// Peers are the file's peers, by host name.
	Peers map[string]Peer `json:"peers,omitempty"`
	// Source is the file as it was given to Parse (or ParseWith), without
	// the VMs ParseWith added: what a later composition starts from.
	Source []byte `json:"-"`

	byName map[string]*VM
}

// VM is one VM with defaults merged and its addressing derived.
type VM struct {
	Name       string `json:"name"`
	Index      int    `json:"index,omitempty"`
	Hypervisor string `json:"hypervisor"`
	VCPU       int    `json:"vcpu"`
	Memory     Size   `json:"memory"`
	Kernel     Kernel `json:"kernel"`
	// KernelParams are added to the guest kernel's command line.
	KernelParams []string          `json:"kernelParams,omitempty"`
	Image        string            `json:"image"`
	Volumes      []Volume          `json:"volumes,omitempty"`
	SSHKeys      []string          `json:"sshKeys,omitempty"`
	Secrets      []Secret          `json:"secrets,omitempty"`
	Ports        []Port            `json:"ports,omitempty"`
	Command      []string          `json:"command,omitempty"`
	Args         []string          `json:"args,omitempty"`
	Env          map[string]string `json:"env,omitempty"`
	Workdir      string            `json:"workdir,omitempty"`
	User         string            `json:"user,omitempty"`
	Init         string            `json:"init"`
	// Store is how the image reaches the guest ("" or auto: the host's
	// choice; virtiofs, 9p, block).
	Store  string `json:"store,omitempty"`
	Limits Limits `json:"limits,omitzero"`
	// Host is the hypervisor host the VM runs on ("" = every host).
	Host string `json:"host,omitempty"`
	// Egress is where the VM may connect beyond the VM networks; like
	// supervision it is not part of the spec hash (a firewall change).
	Egress Egress `json:"egress,omitzero"`
	Net    Net    `json:"net"`
	// Supervision is how the daemon runs the VM; it is not part of the spec
	// hash, so changing it never restarts the VM.
	Supervision Supervision `json:"supervision"`
	// Template says the VM is a template, From names the template of a
	// clone (whose machine and workload are then the template's).
	Template bool   `json:"template,omitempty"`
	From     string `json:"from,omitempty"`
}

// Supervision is how the daemon runs a VM.
type Supervision struct {
	Autostart   bool     `json:"autostart"`
	Restart     string   `json:"restart"`
	StopTimeout Duration `json:"stopTimeout"`
	// PullPolicy is when an OCI image is pulled (missing, always, never).
	PullPolicy string `json:"pullPolicy"`
	// HealthCheck is checked after a deploy starts the VM (optional).
	HealthCheck *HealthCheck `json:"healthCheck,omitempty"`
	// Snapshots is the volume snapshot retention and schedule.
	Snapshots Snapshots `json:"snapshots,omitzero"`
	// MemoryMin is as far as the host may balloon the VM's memory down
	// under pressure (0: never); a change takes effect without a restart.
	MemoryMin Size `json:"memoryMin,omitempty"`
	// ImagePolicy is which signatures the VM's image must carry; it is
	// checked when the image is pulled or the VM started.
	ImagePolicy ImagePolicy `json:"imagePolicy,omitzero"`
	// Pool is how many ready clones of a template the daemon keeps for
	// microvm take (0: none).
	Pool int `json:"pool,omitempty"`
	// Registries are the VM's own registries laid over host.registries
	// (the VM's login wins for a registry both name): the logins the VM's
	// image is pulled
	// with (ciphertext; decrypted only for the pull).
	Registries map[string]RegistryAuth `json:"registries,omitempty"`
}

// Restart policies.
const (
	RestartAlways    = "always"
	RestartOnFailure = "on-failure"
	RestartNo        = "no"
	// Pull policies for OCI images.
	PullMissing = "missing"
	PullAlways  = "always"
	PullNever   = "never"
	// DefaultStopTimeout is how long a clean shutdown may take by default.
	DefaultStopTimeout = Duration(30 * time.Second)
)

// Net is the addressing derived for a VM.
type Net struct {
	// Subnet is the VM's network.
	Subnet netip.Prefix `json:"subnet"`
	// Gateway is the host's address on the bridge (the subnet's first address).
	Gateway netip.Addr `json:"gateway"`
	// Address is the VM's address (the subnet's second address).
	Address netip.Addr `json:"address"`
	// Bridge is the host bridge, br-<name>.
	Bridge string `json:"bridge"`
	// TAP is the VM's TAP device, vm-<name>.
	TAP string `json:"tap"`
	// MAC is the VM NIC's locally administered MAC address.
	MAC string `json:"mac"`
	// Domain is the VMs' DNS domain; the VM is <name>.<domain>, its
	// resolver the gateway.
	Domain string `json:"domain,omitempty"`
	// Subnet6, Gateway6 and Address6 are the VM's IPv6 network (a /64),
	// the host's address on the bridge (::1) and the VM's (::2); unset
	// with IPv6 off.
	Subnet6  netip.Prefix `json:"subnet6,omitzero"`
	Gateway6 netip.Addr   `json:"gateway6,omitzero"`
	Address6 netip.Addr   `json:"address6,omitzero"`
	// Routed6 says the IPv6 network is routed to the host (no NAT66).
	Routed6 bool `json:"routed6,omitempty"`
}

// HasIPv6 says whether the VM has an IPv6 network.
func (n Net) HasIPv6() bool { return n.Subnet6.IsValid() }

// Addrs are the VM's addresses: IPv4, then IPv6 where it has it.
func (n Net) Addrs() []netip.Addr {
	if n.HasIPv6() {
		return []netip.Addr{n.Address, n.Address6}
	}
	return []netip.Addr{n.Address}
}

// Gateways are the host's addresses on the VM's bridge, in the same order.
func (n Net) Gateways() []netip.Addr {
	if n.HasIPv6() {
		return []netip.Addr{n.Gateway, n.Gateway6}
	}
	return []netip.Addr{n.Gateway}
}

// Subnets are the VM's networks, in the same order.
func (n Net) Subnets() []netip.Prefix {
	if n.HasIPv6() {
		return []netip.Prefix{n.Subnet, n.Subnet6}
	}
	return []netip.Prefix{n.Subnet}
}

// ResolvedForward is a host port forward with its target split out.
type ResolvedForward struct {
	HostPort int    `json:"hostPort"`
	Proto    string `json:"proto"`
	VM       string `json:"vm"`
	Port     int    `json:"port"`
}

// VM returns the VM of that name, or nil.
func (c *Config) VM(name string) *VM { return c.byName[name] }

// SpecHash is a digest of everything that defines the VM; a running VM whose
// recorded hash differs must be restarted to take its new spec. Supervision
// settings are left out.
func (vm *VM) SpecHash() string {
	b, err := json.Marshal(vm.RestartSpec())
	if err != nil {
		panic(fmt.Sprintf("config: marshal VM %s: %v", vm.Name, err)) // plain data, cannot fail
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// RestartSpec is the part of the VM whose change restarts it: everything
// but its supervision settings and its egress policy (taken by the running
// VM and the firewall as they are), and the host it runs on (a change of
// host moves the VM as it is).
func (vm *VM) RestartSpec() VM {
	if vm.From != "" {
		// A clone runs the template's state it started from: a change of
		// the template makes a new state for the clones started after it.
		return VM{Name: vm.Name, Index: vm.Index, From: vm.From, SSHKeys: vm.SSHKeys, Secrets: vm.Secrets, Ports: vm.Ports, Net: vm.Net}
	}
	c := *vm
	c.Supervision, c.Egress, c.Host = Supervision{}, Egress{}, ""
	return c
}

// HostAddr is an address configured on one of the host's interfaces.
type HostAddr struct {
	Interface string
	Prefix    netip.Prefix
}

// Options are facts about the host that validation checks against. The zero
// value checks the file alone.
type Options struct {
	// HostCPUs, when above zero, is the most vCPUs a VM may have.
	HostCPUs int
	// HostAddrs are the host's addresses; a VM subnet must not overlap one,
	// except on the VM's own bridge.
	HostAddrs []HostAddr
	// NoKSM, when set, says why the host has no kernel samepage merging
	// (host.ksm is refused).
	NoKSM string
}

// Load reads, decodes and validates the file at path.
func Load(path string, opts Options) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data, opts)
}

// Parse decodes and validates data; name is used in problem messages. On any
// problem it returns a nil Config and a Problems error.
func Parse(name string, data []byte, opts Options) (*Config, error) {
	r := newReporter(name)
	var f File
	decodeFile(r, data, &f)
	decodeProblems := len(r.problems)
	if decodeProblems > 0 && f.VMs == nil {
		return nil, r.result(r.problems)
	}
	cfg := resolve(r, &f, opts)
	if len(r.problems) > 0 {
		return nil, r.result(dropFollowUps(r.problems, decodeProblems))
	}
	cfg.Source = data
	return cfg, nil
}

// dropFollowUps removes semantic problems about a key whose decoding already
// failed (they would only repeat the first problem in other words).
func dropFollowUps(ps Problems, nDecode int) Problems {
	out := append(Problems(nil), ps[:nDecode]...)
	for _, p := range ps[nDecode:] {
		related := false
		for _, q := range ps[:nDecode] {
			if q.Path == p.Path || hasPathPrefix(q.Path, p.Path) || hasPathPrefix(p.Path, q.Path) {
				related = true
				break
			}
		}
		if !related {
			out = append(out, p)
		}
	}
	return out
}

func hasPathPrefix(p, prefix string) bool {
	if prefix == "" || len(p) <= len(prefix) || p[:len(prefix)] != prefix {
		return false
	}
	return p[len(prefix)] == '.' || p[len(prefix)] == '['
}

// resolve merges defaults, derives addressing and validates everything,
// reporting to r.
func resolve(r *reporter, f *File, opts Options) *Config {
	v := &validator{r: r, opts: opts}
	cfg := &Config{Host: f.Host, byName: map[string]*VM{}, Peers: f.Peers}
	v.peers(f.Peers)
	if cfg.Host.ExternalInterface == "" {
		cfg.Host.ExternalInterface = DefaultExternalInterface
	}
	v.host(&cfg.Host)
	if f.VMs == nil {
		r.addAt(0, "vms", "required: the file must have a vms: section (it may be empty: vms: {})")
	}
	if f.Defaults.Index != nil {
		r.addf("defaults.index", "index is per VM; set it under vms.<name>")
	}
	if f.Defaults.Subnet != nil {
		r.addf("defaults.subnet", "subnet is per VM; set it under vms.<name>")
	}
	if f.Defaults.Subnet6 != nil {
		r.addf("defaults.subnet6", "subnet6 is per VM; set it under vms.<name> (or host.ipv6Prefix for all)")
	}
	names := make([]string, 0, len(f.VMs))
	for name := range f.VMs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		spec := f.VMs[name]
		vm := merge(name, &f.Defaults, &spec)
		v.vm(vm, spec)
		cfg.VMs = append(cfg.VMs, vm)
		cfg.byName[name] = vm
	}
	v.spec("defaults", &f.Defaults)
	if f.Defaults.Template != nil || f.Defaults.From != nil || f.Defaults.Pool != nil {
		r.addf("defaults", "template, from and pool are per VM; set them under vms.<name>")
	}
	v.clones(cfg, f.VMs)
	v.crossVM(cfg)
	cfg.Allow = v.allows(cfg, f.Network.Allow)
	cfg.Forwards = v.forwards(cfg, f.Network.Forwards)
	v.egress("network.egress", &f.Network.Egress, true)
	cfg.Egress = f.Network.Egress
	cfg.Domain = v.domain("network.domain", f.Network.Domain)
	for _, vm := range cfg.VMs {
		vm.Supervision.Registries = mergeMaps(cfg.Host.Registries, vm.Supervision.Registries)
		vm.Net.Domain = cfg.Domain
	}
	return cfg
}

// merge lays a VM's own keys over the defaults over the built-in defaults.
func merge(name string, d, s *VMSpec) *VM {
	vm := &VM{
		Name:         name,
		Hypervisor:   pick(s.Hypervisor, d.Hypervisor, DefaultHypervisor),
		VCPU:         pick(s.VCPU, d.VCPU, DefaultVCPU),
		Memory:       pick(s.Memory, d.Memory, DefaultMemory),
		Kernel:       pick(s.Kernel, d.Kernel, Kernel{}),
		KernelParams: pickList(s.KernelParams, d.KernelParams),
		Image:        pick(s.Image, d.Image, DefaultImage),
		Volumes:      pickList(s.Volumes, d.Volumes),
		SSHKeys:      pickList(s.SSHKeys, d.SSHKeys),
		Secrets:      pickList(s.Secrets, d.Secrets),
		Ports:        pickList(s.Ports, d.Ports),
		Command:      pickList(s.Command, d.Command),
		Args:         pickList(s.Args, d.Args),
		Env:          mergeMaps(d.Env, s.Env),
		Workdir:      pick(s.Workdir, d.Workdir, ""),
		User:         pick(s.User, d.User, ""),
		Init:         pick(s.Init, d.Init, InitMicrovm),
		Store:        pick(s.Store, d.Store, ""),
		Limits:       pick(s.Limits, d.Limits, Limits{}),
		Supervision: Supervision{
			Autostart:   pick(s.Autostart, d.Autostart, true),
			Restart:     pick(s.Restart, d.Restart, RestartAlways),
			StopTimeout: pick(s.StopTimeout, d.StopTimeout, DefaultStopTimeout),
			PullPolicy:  pick(s.PullPolicy, d.PullPolicy, PullMissing),
			HealthCheck: pickPtr(s.HealthCheck, d.HealthCheck),
			Snapshots:   pick(s.Snapshots, d.Snapshots, Snapshots{}),
			MemoryMin:   pick(s.MemoryMin, d.MemoryMin, 0),
			ImagePolicy: pick(s.ImagePolicy, d.ImagePolicy, ImagePolicy{}),
			Registries:  mergeMaps(d.Registries, s.Registries),
			Pool:        pick(s.Pool, nil, 0),
		},
		Host:   pick(s.Host, d.Host, ""),
		Egress: pick(s.Egress, d.Egress, Egress{}),
	}
	if s.Index != nil {
		vm.Index = *s.Index
	}
	vm.Template = pick(s.Template, nil, false)
	vm.From = pick(s.From, nil, "")
	return vm
}

func pickPtr[T any](own, def *T) *T {
	if own != nil {
		return own
	}
	return def
}

func pick[T any](own, def *T, builtin T) T {
	if own != nil {
		return *own
	}
	if def != nil {
		return *def
	}
	return builtin
}

// mergeMaps: a map merges key by key with the default's, the VM's keys winning.
func mergeMaps[V any](def, own map[string]V) map[string]V {
	if len(def) == 0 && len(own) == 0 {
		return nil
	}
	out := make(map[string]V, len(def)+len(own))
	for k, v := range def {
		out[k] = v
	}
	for k, v := range own {
		out[k] = v
	}
	return out
}

// pickList: a list written on the VM (even empty) replaces the default's.
func pickList[T any](own, def []T) []T {
	src := def
	if own != nil {
		src = own
	}
	if len(src) == 0 {
		return nil
	}
	return append([]T(nil), src...)
}

// ForHost is the part of the file host runs: the VMs that name it (all of
// them when no VM names a host), with the allow rules between those VMs
// (validation refuses one between hosts) and the forwards to them. The
// subnets of every VM stay reserved by validation, so hosts never
// overlap.
func (c *Config) ForHost(host string) *Config {
	named := false
	for _, vm := range c.VMs {
		if vm.Host != "" {
			named = true
		}
	}
	if !named {
		return c
	}
	out := *c
	out.VMs, out.byName = nil, map[string]*VM{}
	var others []string
	for _, vm := range c.VMs {
		if vm.Host == host {
			out.VMs = append(out.VMs, vm)
			out.byName[vm.Name] = vm
		} else {
			others = append(others, vm.Name)
		}
	}
	// An apply composes the source again (with the VMs put through the
	// API): it must hold this host's VMs only.
	if src, err := WithoutVMs(c.Source, others); err == nil {
		out.Source = src
	}
	out.Allow = nil
	for _, a := range c.Allow {
		if out.byName[a.From] != nil && out.byName[a.To] != nil {
			out.Allow = append(out.Allow, a)
		}
	}
	out.Forwards = nil
	for _, f := range c.Forwards {
		if out.byName[f.VM] != nil {
			out.Forwards = append(out.Forwards, f)
		}
	}
	return &out
}
