package verify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/tailnet"
	"microvm.dev/microvm/internal/vmssh"
)

// tailnetChecks are the tailnet path, for a file that advertises the VM
// subnets: the node on its tailnet, the routes advertised and approved,
// and a VM's SSH answering the host's tailnet address (as a tailnet peer's
// connection, which leaves the host's TUN from it after the subnet router's
// NAT, does). Without Tailscale installed they are skipped, saying so.
func tailnetChecks(f Fleet) []Check {
	cfg := f.Config
	c := f.Tailscale.WithSocket(cfg.Host.Tailscale.Socket)
	var subnets []netip.Prefix
	for _, vm := range cfg.VMs {
		subnets = append(subnets, vm.Net.Subnets()...)
	}
	want := tailnet.Routes(subnets)
	load := sync.OnceValues(func() (tailnet.Node, error) { return c.Status(context.Background()) })
	fail := func(err error) (Status, string) {
		if errors.Is(err, tailnet.ErrNoTailscale) {
			return Skip, err.Error()
		}
		return Fail, err.Error() + " (start it: systemctl enable --now tailscaled)"
	}
	return []Check{
		{Name: "tailscale node", Run: func() (Status, string) {
			n, err := load()
			if err != nil {
				return fail(err)
			}
			if n.BackendState != "Running" {
				return Fail, fmt.Sprintf("tailscaled is %s, not on a tailnet: log it in with `tailscale up`", n.BackendState)
			}
			ev := "on the tailnet as " + joinAddrs(n.Addrs)
			if !n.TUN {
				return Fail, ev + ", but tailscaled runs with --tun=userspace-networking, so tailnet connections to VMs leave from the host itself and the firewall cannot limit them to SSH and the declared ports (run it with its TUN device)"
			}
			return Pass, ev
		}},
		{Name: "tailscale routes", Run: func() (Status, string) {
			have, err := c.Advertised(context.Background())
			if err != nil {
				return fail(err)
			}
			owned, err := tailnet.Owned(f.StateDir)
			if err != nil {
				return Fail, err.Error()
			}
			var stale, others []string
			for _, r := range tailnet.Missing(have, want) {
				if owned(r) {
					stale = append(stale, r)
				} else {
					others = append(others, r)
				}
			}
			if missing := tailnet.Missing(want, have); len(missing) > 0 || len(stale) > 0 {
				return Fail, fmt.Sprintf("advertised %v, want the VM subnets %v (is the daemon running?)", have, want)
			}
			n, err := load()
			if err != nil {
				return fail(err)
			}
			if u := tailnet.Missing(want, n.Approved); len(u) > 0 {
				return Fail, fmt.Sprintf("advertised, but the tailnet has not approved %s: approve them in the admin console (Machines, this host, Edit route settings) or with autoApprovers in the tailnet policy", strings.Join(u, ", "))
			}
			ev := "advertises and the tailnet approved " + strings.Join(want, ", ")
			if len(others) > 0 {
				ev += "; also advertises " + strings.Join(others, ", ") + " (not microvm's)"
			}
			return Pass, ev
		}},
		{Name: "tailnet → VM SSH", Run: func() (Status, string) {
			n, err := load()
			if err != nil {
				return fail(err)
			}
			from := firstV4(n.Addrs)
			if !n.TUN || !from.IsValid() {
				return Skip, "tailscaled has no TUN device with an IPv4 tailnet address here to send from"
			}
			vm := firstRunning(f)
			if vm == "" {
				return Skip, "no VM is running"
			}
			addr := net.JoinHostPort(cfg.VM(vm).Net.Address.String(), "22")
			conn, err := vmssh.DialFromIn(f.NetNS, from, addr, 3*time.Second)
			if err != nil {
				return Fail, fmt.Sprintf("%s from %s: %v", addr, from, err)
			}
			defer conn.Close()
			conn.SetReadDeadline(time.Now().Add(3 * time.Second))
			banner := make([]byte, 64)
			k, err := conn.Read(banner)
			if err != nil || !strings.HasPrefix(string(banner[:k]), "SSH-") {
				return Fail, fmt.Sprintf("%s from %s: no SSH banner (%v)", addr, from, err)
			}
			return Pass, fmt.Sprintf("%s's SSH (%s) answers the host's tailnet address %s", vm, addr, from)
		}},
	}
}

func joinAddrs(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

func firstV4(addrs []netip.Addr) netip.Addr {
	for _, a := range addrs {
		if a.Is4() {
			return a
		}
	}
	return netip.Addr{}
}

// firstRunning is the first VM of the file (by name) the daemon runs.
func firstRunning(f Fleet) string {
	var names []string
	for _, vm := range f.Config.VMs {
		if st, ok := f.Status(vm.Name); ok && st.State == apitypes.Running {
			names = append(names, vm.Name)
		}
	}
	slices.Sort(names)
	if len(names) == 0 {
		return ""
	}
	return names[0]
}
