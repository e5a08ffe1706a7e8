package resolver

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
)

// HostResolvConf is where the host's own resolvers are read from.
const HostResolvConf = "/etc/resolv.conf"

// HostUpstreams reads the nameservers of a resolv.conf as host:port
// upstreams (port 53), leaving out the addresses in not (the VMs' own
// gateways: the server must not ask itself).
func HostUpstreams(path string, not []netip.Addr) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("the host's resolvers: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(fields[1])
		if err != nil || containsAddr(not, a.WithZone("")) {
			continue
		}
		out = append(out, net.JoinHostPort(a.String(), "53"))
	}
	return out, sc.Err()
}

// Upstream is a configured upstream (host.dns): an address, or address:port.
func Upstream(s string) (string, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return net.JoinHostPort(a.String(), "53"), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 {
		return "", fmt.Errorf("%q is not an address or address:port", s)
	}
	return ap.String(), nil
}

func containsAddr(list []netip.Addr, a netip.Addr) bool {
	for _, x := range list {
		if x == a {
			return true
		}
	}
	return false
}
