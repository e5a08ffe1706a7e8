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
// from the host.
func Live(f Fleet) []Check {
	cfg := f.Config
	var checks []Check
	h, herr := hostnet.Open(f.NetNS)
	var links []hostnet.LinkState
	if herr == nil {
		links, herr = h.Show()
	}
	for _, vm := range cfg.VMs {
		gw := netip.PrefixFrom(vm.Net.Gateway, vm.Net.Subnet.Bits()).String()
		checks = append(checks, Check{Name: "bridge " + vm.Net.Bridge, Run: func() (Status, string) {
			if herr != nil {
				return Fail, herr.Error()
			}
			for _, l := range links {
				if l.Name == vm.Net.Bridge {
					if !l.Up || !slices.Contains(l.Addrs, gw) {
						return Fail, fmt.Sprintf("%s is up=%t with %v, want up with %s", l.Name, l.Up, l.Addrs, gw)
					}
					return Pass, fmt.Sprintf("up with %s", gw)
				}
			}
			return Fail, fmt.Sprintf("%s does not exist", vm.Net.Bridge)
		}})
	}
	checks = append(checks, Check{Name: "ip forwarding", Run: func() (Status, string) {
		if h == nil {
			return Fail, herr.Error()
		}
		var v []byte
		err := h.Do(func() error {
			var err error
			v, err = os.ReadFile("/proc/sys/net/ipv4/ip_forward")
			return err
		})
		if err != nil {
			return Fail, err.Error()
		}
		if strings.TrimSpace(string(v)) != "1" {
			return Fail, "net.ipv4.ip_forward = " + strings.TrimSpace(string(v))
		}
		return Pass, "net.ipv4.ip_forward = 1"
	}})
	gateway := ""
	checks = append(checks, Check{Name: "NAT", Run: func() (Status, string) {
		if h == nil {
			return Fail, herr.Error()
		}
		uplink, err := h.ResolveUplink(cfg.Host)
		if err != nil {
			return Skip, "no uplink: " + err.Error()
		}
		gateway, _ = h.DefaultGateway()
		out, err := nft(f.NetNS, "list", "chain", "inet", "microvm", "nat_out")
		if err != nil {
			return Fail, err.Error()
		}
		want := fmt.Sprintf("oifname %q ip saddr @vm_subnets masquerade", uplink)
		if !strings.Contains(out, want) {
			return Fail, fmt.Sprintf("nat_out lacks %q", want)
		}
		return Pass, "masquerade to " + uplink
	}})

	if cfg.Host.Tailscale.AdvertiseRoutes {
		checks = append(checks, tailnetChecks(f)...)
	}

	// One SSH session per VM gathers its facts and probes, all in parallel.
	var once sync.Once
	facts := map[string]map[string]string{}
	errs := map[string]error{}
	gather := func() {
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, vm := range cfg.VMs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				fs, err := probe(f, vm, gateway)
				mu.Lock()
				facts[vm.Name], errs[vm.Name] = fs, err
				mu.Unlock()
			}()
		}
		wg.Wait()
	}
	for _, vm := range cfg.VMs {
		name := vm.Name
		checks = append(checks, Check{Name: name + " running", Run: func() (Status, string) {
			st, ok := f.Status(name)
			if !ok {
				return Fail, "the daemon does not know it"
			}
			if st.State != apitypes.Running {
				return Fail, fmt.Sprintf("state %s %s", st.State, st.Failure)
			}
			return Pass, fmt.Sprintf("pid %d, up since %s, booted in %.1fs", st.PID, st.StartedAt.Format(time.RFC3339), st.BootSeconds)
		}})
		checks = append(checks, Check{Name: name + " hypervisor privileges", Run: func() (Status, string) {
			st, ok := f.Status(name)
			if !ok || st.PID == 0 {
				return Fail, "not running"
			}
			return hypervisorPrivileges(st.PID)
		}})
		checks = append(checks, Check{Name: name + " hypervisor confined", Run: func() (Status, string) {
			st, ok := f.Status(name)
			if !ok || st.PID == 0 {
				return Fail, "not running"
			}
			return hypervisorConfined(st.PID)
		}})
		fact := func(check func(map[string]string) (Status, string)) func() (Status, string) {
			return func() (Status, string) {
				once.Do(gather)
				if err := errs[name]; err != nil {
					return Fail, err.Error()
				}
				return check(facts[name])
			}
		}
		checks = append(checks, Check{Name: name + " over SSH", Run: fact(func(m map[string]string) (Status, string) {
			memKB, _ := strconv.ParseInt(m["memkb"], 10, 64)
			wantKB := int64(vm.Memory) / 1024
			ev := fmt.Sprintf("hostname %s, %s vCPU, %d MiB", m["hostname"], m["nproc"], memKB/1024)
			if m["hostname"] != name || m["nproc"] != strconv.Itoa(vm.VCPU) || memKB > wantKB || memKB < wantKB*7/10 {
				return Fail, ev + fmt.Sprintf("; want hostname %s, %d vCPU, %s", name, vm.VCPU, vm.Memory)
			}
			return Pass, ev
		})})
		checks = append(checks, Check{Name: name + " store read-only", Run: fact(func(m map[string]string) (Status, string) {
			if m["store_write"] != "refused" {
				return Fail, "a write to /run/microvm/store succeeded"
			}
			return Pass, "writes to /run/microvm/store are refused"
		})})
		checks = append(checks, Check{Name: name + " /var ephemeral", Run: fact(func(m map[string]string) (Status, string) {
			// The image's own /var, on the root overlay whose upper layer is
			// in memory: reset to the image's content at every boot.
			if m["var"] != "" || m["root_upper"] != "upperdir=/run/microvm/rw/upper" {
				return Fail, fmt.Sprintf("/var is mounted %q on a root with %q, not on the root's in-memory overlay", m["var"], m["root_upper"])
			}
			return Pass, "/var is the image's, on the root overlay's in-memory upper layer"
		})})
		for _, v := range vm.Volumes {
			checks = append(checks, Check{Name: name + " volume " + v.Name, Run: fact(func(m map[string]string) (Status, string) {
				if m["mount "+v.MountPoint] != "ext4" {
					return Fail, fmt.Sprintf("%s is not mounted (found %q)", v.MountPoint, m["mount "+v.MountPoint])
				}
				return Pass, v.MountPoint + " is ext4"
			})})
		}
		checks = append(checks, Check{Name: name + " → gateway", Run: fact(func(m map[string]string) (Status, string) {
			return reachable(m["ping_gateway"], vm.Net.Gateway.String())
		})})
		if vm.Net.HasIPv6() {
			checks = append(checks, Check{Name: name + " → gateway (IPv6)", Run: fact(func(m map[string]string) (Status, string) {
				return reachable(m["ping_gateway6"], vm.Net.Gateway6.String())
			})})
		}
		checks = append(checks, Check{Name: name + " → internet", Run: fact(func(m map[string]string) (Status, string) {
			if gateway == "" {
				return Skip, "the host has no default gateway"
			}
			return reachable(m["ping_internet"], gateway+" (the host's default gateway, through NAT)")
		})})
		checks = append(checks, Check{Name: name + " DNS", Run: fact(func(m map[string]string) (Status, string) {
			return vmNames(cfg, vm, m)
		})})
		checks = append(checks, Check{Name: name + " → cloud metadata", Run: fact(func(m map[string]string) (Status, string) {
			if metadataAllowed(cfg, vm) {
				return Skip, "the file allows " + metadataAddr + " to this VM"
			}
			if got := m["metadata"]; got != "blocked" {
				return Fail, fmt.Sprintf("%s:80 is reachable from the VM (%s): its egress is not closed", metadataAddr, got)
			}
			return Pass, metadataAddr + " (the cloud metadata service) is unreachable"
		})})
		checks = append(checks, Check{Name: name + " isolation", Run: fact(func(m map[string]string) (Status, string) {
			var broken, allowedOK, notes []string
			v6 := 0
			for _, other := range cfg.VMs {
				if other.Name == name {
					continue
				}
				port := allowedPort(cfg, name, other.Name)
				targets := isolationTargets(vm, other)
				if len(targets) > 1 {
					v6++
				}
				for _, tg := range targets {
					got := m[tg.key]
					switch {
					case got == "":
						notes = append(notes, tg.key[3:]+": not probed")
					case port != 0 && got == "blocked":
						broken = append(broken, fmt.Sprintf("%s → %s:%d is allowed but blocked (%s)", name, other.Name, port, netip.AddrPortFrom(tg.addr, uint16(port))))
					case port != 0:
						if tg.addr == other.Net.Address {
							allowedOK = append(allowedOK, fmt.Sprintf("%s:%d", other.Name, port))
						}
					case got != "blocked":
						broken = append(broken, fmt.Sprintf("%s → %s (%s) is reachable (%s): isolation is broken", name, other.Name, netip.AddrPortFrom(tg.addr, 22), got))
					}
				}
			}
			if len(broken) > 0 {
				return Fail, strings.Join(broken, "; ")
			}
			ev := fmt.Sprintf("cannot reach the %d other VMs", len(cfg.VMs)-1-len(allowedOK))
			if v6 > 0 {
				ev += ", over IPv4 or IPv6"
			}
			if len(allowedOK) > 0 {
				ev += "; reaches allowed " + strings.Join(allowedOK, ", ")
			}
			if len(notes) > 0 {
				ev += "; " + strings.Join(notes, ", ")
			}
			return Pass, ev
		})})
		for _, p := range vm.Ports {
			if p.Proto != "tcp" {
				continue
			}
			addr := net.JoinHostPort(vm.Net.Address.String(), strconv.Itoa(p.From))
			checks = append(checks, Check{Name: fmt.Sprintf("%s port %d", name, p.From), Run: func() (Status, string) {
				c, err := vmssh.DialIn(f.NetNS, addr, 3*time.Second)
				if err != nil {
					return Fail, fmt.Sprintf("%s from the host: %v", addr, err)
				}
				c.Close()
				return Pass, addr + " answers from the host"
			}})
		}
	}
	if len(cfg.VMs) > 1 {
		checks = append(checks, Check{Name: "one identity per hypervisor", Run: func() (Status, string) {
			return identities(f, cfg)
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
