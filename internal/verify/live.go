package verify

import (
	"bytes"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/hostnet"
	"microvm.dev/microvm/internal/tailnet"
	"microvm.dev/microvm/internal/vmm"
	"microvm.dev/microvm/internal/vmssh"
)

// Fleet is what the live checks look at: the applied file, the state
// directory, the network namespace standing for the host ("" = this one)
// and the daemon's view of each VM.
type Fleet struct {
	Config   *config.Config
	StateDir string
	NetNS    string
	// Status is the daemon's status of a VM.
	Status func(name string) (apitypes.VMStatus, bool)
	// Tailscale reads the advertised routes (its socket is the file's
	// host.tailscale.socket when that is set).
	Tailscale tailnet.Client
}

// Live are the checks of the running fleet, modelled on the reference
// setup's testing guide: bridges with their gateways, forwarding, NAT,
// every VM running and answering over SSH with its hostname, vCPUs and
// memory, reaching its gateway and (when the host has a default gateway)
// beyond it, failing to reach every other VM except allowed pairs, a
// read-only store, an ephemeral /var (the image's, on the in-memory
// overlay), the data volumes mounted, and the declared ports answering
// from the host. The checks are grouped: the host's (live_host.go), each
// VM's process (its state, privileges, confinement), what each guest
// reports over SSH (live_guest.go), the tailnet's (tailnet.go).
func Live(f Fleet) []Check {
	l := newLive(f)
	checks := l.hostChecks()
	if f.Config.Host.Tailscale.AdvertiseRoutes {
		checks = append(checks, tailnetChecks(f)...)
	}
	for _, vm := range f.Config.VMs {
		checks = append(checks, l.processChecks(vm.Name)...)
		checks = append(checks, l.guestChecks(vm)...)
		checks = append(checks, l.portChecks(vm)...)
	}
	if len(f.Config.VMs) > 1 {
		checks = append(checks, Check{Name: "one identity per hypervisor", Run: func() (Status, string) {
			return identities(f, f.Config)
		}})
	}
	return checks
}

// live is one run of the live checks: the host's namespace, its links,
// the default gateway the NAT check finds, and each guest's facts,
// gathered once over SSH for every VM at the first check that needs them.
type live struct {
	f     Fleet
	h     *hostnet.Host
	herr  error
	links []hostnet.LinkState
	// gateway is the host's default gateway, found by the NAT check ("":
	// none), which the guests' probes then try to reach.
	gateway string
	once    sync.Once
	facts   map[string]map[string]string
	errs    map[string]error
}

func newLive(f Fleet) *live {
	l := &live{f: f, facts: map[string]map[string]string{}, errs: map[string]error{}}
	l.h, l.herr = hostnet.Open(f.NetNS)
	if l.herr == nil {
		l.links, l.herr = l.h.Show()
	}
	return l
}

// gather runs every VM's probe over SSH, all in parallel.
func (l *live) gather() {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, vm := range l.f.Config.VMs {
		wg.Go(func() {
			fs, err := probe(l.f, vm, l.gateway)
			mu.Lock()
			l.facts[vm.Name], l.errs[vm.Name] = fs, err
			mu.Unlock()
		})
	}
	wg.Wait()
}

// fact is a check of what the VM name's probe reported.
func (l *live) fact(name string, check func(map[string]string) (Status, string)) func() (Status, string) {
	return func() (Status, string) {
		l.once.Do(l.gather)
		if err := l.errs[name]; err != nil {
			return Fail, err.Error()
		}
		return check(l.facts[name])
	}
}

// processChecks are the checks of the VM name's hypervisor as the daemon
// and /proc see it: running, without privileges, confined.
func (l *live) processChecks(name string) []Check {
	pid := func() (int, bool) {
		st, ok := l.f.Status(name)
		return st.PID, ok && st.PID != 0
	}
	return []Check{
		{Name: name + " running", Run: func() (Status, string) {
			st, ok := l.f.Status(name)
			if !ok {
				return Fail, "the daemon does not know it"
			}
			if st.State != apitypes.Running {
				return Fail, fmt.Sprintf("state %s %s", st.State, st.Failure)
			}
			return Pass, fmt.Sprintf("pid %d, up since %s, booted in %.1fs", st.PID, st.StartedAt.Format(time.RFC3339), st.BootSeconds)
		}},
		{Name: name + " hypervisor privileges", Run: func() (Status, string) {
			p, ok := pid()
			if !ok {
				return Fail, "not running"
			}
			return hypervisorPrivileges(p)
		}},
		{Name: name + " hypervisor confined", Run: func() (Status, string) {
			p, ok := pid()
			if !ok {
				return Fail, "not running"
			}
			return hypervisorConfined(p)
		}},
	}
}

// portChecks are the VM's declared TCP ports, each answering from the
// host.
func (l *live) portChecks(vm *config.VM) []Check {
	var checks []Check
	for _, p := range vm.Ports {
		if p.Proto != "tcp" {
			continue
		}
		addr := net.JoinHostPort(vm.Net.Address.String(), strconv.Itoa(p.From))
		checks = append(checks, Check{Name: fmt.Sprintf("%s port %d", vm.Name, p.From), Run: func() (Status, string) {
			c, err := vmssh.DialIn(l.f.NetNS, addr, 3*time.Second)
			if err != nil {
				return Fail, fmt.Sprintf("%s from the host: %v", addr, err)
			}
			c.Close()
			return Pass, addr + " answers from the host"
		}})
	}
	return checks
}

// Unconfined lists what the process at proc (a /proc/PID directory) lacks
// of a confined hypervisor's namespaces, against those of the process at
// self: "its own mount namespace" (the root of its own) and "its own PID
// namespace".
func Unconfined(proc, self string) ([]string, error) {
	var lacks []string
	for _, ns := range []struct{ name, what string }{{"mnt", "its own mount namespace"}, {"pid", "its own PID namespace"}} {
		theirs, err := os.Readlink(filepath.Join(proc, "ns", ns.name))
		if err != nil {
			return nil, err
		}
		ours, err := os.Readlink(filepath.Join(self, "ns", ns.name))
		if err != nil {
			return nil, err
		}
		if theirs == ours {
			lacks = append(lacks, ns.what)
		}
	}
	return lacks, nil
}

// hypervisorConfined checks that the hypervisor at pid is shut into a root
// of its own in its own PID namespace (internal/confine).
func hypervisorConfined(pid int) (Status, string) {
	lacks, err := Unconfined(fmt.Sprintf("/proc/%d", pid), "/proc/self")
	if err != nil {
		return Fail, err.Error()
	}
	if len(lacks) > 0 {
		return Skip, "not confined: it shares the host's " + strings.ReplaceAll(strings.Join(lacks, " and "), "its own ", "") + "; run hypervisors as the unprivileged --vmm-user with --vmm-confine auto (docs/security.md)"
	}
	return Pass, "a root of its own (its VM's files only) in its own mount and PID namespaces"
}

// identities checks that no two VMs' hypervisors run as the same uid (so
// file permissions keep each off the others' volumes, logs and sockets).
func identities(f Fleet, cfg *config.Config) (Status, string) {
	byUID := map[string][]string{}
	var ev []string
	for _, vm := range cfg.VMs {
		st, ok := f.Status(vm.Name)
		if !ok || st.PID == 0 {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", st.PID))
		if err != nil {
			return Fail, err.Error()
		}
		uid := "?"
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Uid:"); ok {
				uid = strings.Fields(v)[0]
			}
		}
		byUID[uid] = append(byUID[uid], vm.Name)
		ev = append(ev, vm.Name+" uid "+uid)
	}
	for uid, vms := range byUID {
		if len(vms) > 1 {
			return Skip, fmt.Sprintf("%s share uid %s: give the hypervisors' user a subordinate id range (docs/security.md) for one identity per VM", strings.Join(vms, ", "), uid)
		}
	}
	if len(ev) == 0 {
		return Skip, "no VM runs"
	}
	return Pass, strings.Join(ev, ", ")
}

// metadataAddr is the cloud metadata service's address (AWS, GCP, Azure).
const metadataAddr = "169.254.169.254"

// metadataAllowed says whether the file opens the metadata service to vm.
func metadataAllowed(cfg *config.Config, vm *config.VM) bool {
	md := netip.MustParseAddr(metadataAddr)
	for _, r := range append(append([]config.EgressRule{}, cfg.Egress.Allow...), vm.Egress.Allow...) {
		if p, ok := r.Prefix(); ok && p.Contains(md) {
			return true
		}
	}
	return false
}

// hypervisorPrivileges reads a hypervisor's identity and capabilities from
// /proc: PASS unprivileged (no capabilities but CAP_DAC_READ_SEARCH for a
// 9p store, none in its bounding set beyond that, no_new_privs), SKIP as
// root (--vmm-user root, or no microvm user), FAIL for anything between.
func hypervisorPrivileges(pid int) (Status, string) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Fail, err.Error()
	}
	fields := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = strings.TrimSpace(v)
		}
	}
	uid := strings.Fields(fields["Uid"])
	ev := fmt.Sprintf("uid %s, CapEff %s, CapBnd %s, NoNewPrivs %s, Seccomp %s", strings.Join(uid, "/"), fields["CapEff"], fields["CapBnd"], fields["NoNewPrivs"], fields["Seccomp"])
	if len(uid) == 4 && uid[0] == "0" {
		return Skip, "runs as root (" + ev + "): create the microvm user, see docs/security.md"
	}
	allowed := map[string]bool{"0000000000000000": true, "0000000000000004": true}
	if len(uid) != 4 || slices.Contains(uid, "0") || !allowed[fields["CapEff"]] || !allowed[fields["CapBnd"]] || fields["NoNewPrivs"] != "1" {
		return Fail, ev
	}
	return Pass, ev
}

func reachable(result, what string) (Status, string) {
	if result == "ok" {
		return Pass, "reaches " + what
	}
	return Fail, fmt.Sprintf("cannot reach %s (%s)", what, result)
}

// allowedPort is a TCP port from may open to `to`, or 0.
func allowedPort(cfg *config.Config, from, to string) int {
	for _, a := range cfg.Allow {
		if a.From == from && a.To == to {
			for _, p := range a.Ports {
				if p.Proto == "tcp" {
					return p.From
				}
			}
		}
	}
	return 0
}

// addresses are a VM's addresses as the probe's lookups list them:
// sorted, comma-separated.
func addresses(vm *config.VM) string {
	var list []string
	for _, a := range vm.Net.Addrs() {
		list = append(list, a.String())
	}
	slices.Sort(list)
	return strings.Join(list, ",")
}

// isolationTarget is one address of another VM that vm's probe tries,
// under the key its result comes back as.
type isolationTarget struct {
	key  string
	addr netip.Addr
}

// isolationTargets are other's addresses in the families vm has: its
// IPv4 address ("to NAME"), and its IPv6 one ("to NAME (IPv6)") when both
// have IPv6.
func isolationTargets(vm, other *config.VM) []isolationTarget {
	out := []isolationTarget{{"to " + other.Name, other.Net.Address}}
	if vm.Net.HasIPv6() && other.Net.HasIPv6() {
		out = append(out, isolationTarget{"to " + other.Name + " (IPv6)", other.Net.Address6})
	}
	return out
}

// otherVM is the first VM of cfg that is not name, or nil.
func otherVM(cfg *config.Config, name string) *config.VM {
	for _, v := range cfg.VMs {
		if v.Name != name {
			return v
		}
	}
	return nil
}

// vmNames checks what vm's probe resolved: its own <name>.<domain> to its
// address, another VM's bare name (through the search domain) to that
// VM's.
func vmNames(cfg *config.Config, vm *config.VM, m map[string]string) (Status, string) {
	if vm.Net.Domain == "" {
		return Skip, "the VMs have no domain"
	}
	want := map[string]*config.VM{vm.Name: vm}
	if o := otherVM(cfg, vm.Name); o != nil {
		want[o.Name] = o
	}
	var ev, bad []string
	for _, n := range slices.Sorted(maps.Keys(want)) {
		got, addr := m["dns "+n], addresses(want[n])
		host := n
		if n == vm.Name {
			host = n + "." + vm.Net.Domain
		}
		if got != addr {
			bad = append(bad, fmt.Sprintf("%s resolves to %q, want %s", host, got, addr))
			continue
		}
		ev = append(ev, host+" is "+addr)
	}
	if len(bad) > 0 {
		return Fail, strings.Join(bad, "; ") + " (the resolver is the daemon's, on the gateway " + vm.Net.Gateway.String() + ":53)"
	}
	return Pass, strings.Join(ev, ", ")
}

// probe runs one shell script in vm over SSH and parses its key=value lines.
func probe(f Fleet, vm *config.VM, gateway string) (map[string]string, error) {
	c, err := vmssh.Dial(f.StateDir, vm.Name, vm.Net.Address.String(), f.NetNS, 10*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	// microvm-init's own probe, bound into every VM's root: it needs
	// nothing from the image (no ping, nc or awk).
	argv := []string{"/run/microvm/init", "probe", "ping", "ping_gateway=" + vm.Net.Gateway.String()}
	if vm.Net.HasIPv6() {
		argv = append(argv, "ping", "ping_gateway6="+vm.Net.Gateway6.String())
	}
	if gateway != "" {
		argv = append(argv, "ping", "ping_internet="+gateway)
	}
	for _, v := range vm.Volumes {
		argv = append(argv, "mount", "mount "+v.MountPoint+"="+v.MountPoint)
	}
	argv = append(argv, "tcp", "metadata="+net.JoinHostPort(metadataAddr, "80"))
	if vm.Net.Domain != "" {
		argv = append(argv, "dns", "dns "+vm.Name+"="+vm.Name+"."+vm.Net.Domain)
		if other := otherVM(f.Config, vm.Name); other != nil {
			argv = append(argv, "dns", "dns "+other.Name+"="+other.Name) // by its bare name: the search domain
		}
	}
	for _, other := range f.Config.VMs {
		if other.Name == vm.Name {
			continue
		}
		port := allowedPort(f.Config, vm.Name, other.Name)
		if port == 0 {
			port = 22
		}
		for _, tg := range isolationTargets(vm, other) {
			argv = append(argv, "tcp", tg.key+"="+netip.AddrPortFrom(tg.addr, uint16(port)).String())
		}
	}
	s, err := c.NewSession()
	if err != nil {
		return nil, err
	}
	defer s.Close()
	var out bytes.Buffer
	s.Stdout = &out
	if err := s.Run(vmm.ShellQuote(argv)); err != nil {
		return nil, fmt.Errorf("probe over SSH: %v: %s", err, out.String())
	}
	m := map[string]string{}
	for _, line := range strings.Split(out.String(), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m, nil
}

// nft runs nft inside the namespace.
func nft(ns string, args ...string) (string, error) {
	argv := append([]string{"nft"}, args...)
	if ns != "" {
		argv = append([]string{"nsenter", "--net=" + ns, "--"}, argv...)
	}
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}
