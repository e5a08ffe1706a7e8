package resolver

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"microvm.dev/microvm/internal/config"
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
		if err != nil || slices.Contains(not, a.WithZone("")) {
			continue
		}
		out = append(out, net.JoinHostPort(a.String(), "53"))
	}
	return out, sc.Err()
}

// Upstream is a configured upstream (host.dns) as host:port: an address
// (port 53), or address:port (config.ResolverAddr).
func Upstream(s string) (string, error) {
	ap, err := config.ResolverAddr(s)
	if err != nil {
		return "", err
	}
	return ap.String(), nil
}
