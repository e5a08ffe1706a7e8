package verify

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
)

// hostChecks are the host's side of the VMs' networks: each bridge up
// with its gateway, IPv4 forwarding, NAT to the uplink (which finds the
// host's default gateway for the guests' probes).
func (l *live) hostChecks() []Check {
	cfg := l.f.Config
	var checks []Check
	for _, vm := range cfg.VMs {
		gw := netip.PrefixFrom(vm.Net.Gateway, vm.Net.Subnet.Bits()).String()
		checks = append(checks, Check{Name: "bridge " + vm.Net.Bridge, Run: func() (Status, string) {
			if l.herr != nil {
				return Fail, l.herr.Error()
			}
			for _, link := range l.links {
				if link.Name == vm.Net.Bridge {
					if !link.Up || !slices.Contains(link.Addrs, gw) {
						return Fail, fmt.Sprintf("%s is up=%t with %v, want up with %s", link.Name, link.Up, link.Addrs, gw)
					}
					return Pass, fmt.Sprintf("up with %s", gw)
				}
			}
			return Fail, fmt.Sprintf("%s does not exist", vm.Net.Bridge)
		}})
	}
	checks = append(checks, Check{Name: "ip forwarding", Run: func() (Status, string) {
		if l.h == nil {
			return Fail, l.herr.Error()
		}
		var v []byte
		err := l.h.Do(func() error {
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
	checks = append(checks, Check{Name: "NAT", Run: func() (Status, string) {
		if l.h == nil {
			return Fail, l.herr.Error()
		}
		uplink, err := l.h.ResolveUplink(cfg.Host)
		if err != nil {
			return Skip, "no uplink: " + err.Error()
		}
		l.gateway, _ = l.h.DefaultGateway()
		out, err := nft(l.f.NetNS, "list", "chain", "inet", "microvm", "nat_out")
		if err != nil {
			return Fail, err.Error()
		}
		want := fmt.Sprintf("oifname %q ip saddr @vm_subnets masquerade", uplink)
		if !strings.Contains(out, want) {
			return Fail, fmt.Sprintf("nat_out lacks %q", want)
		}
		return Pass, "masquerade to " + uplink
	}})

	return checks
}
