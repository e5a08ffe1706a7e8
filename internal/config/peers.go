package config

import (
	"maps"
	"net"
	"regexp"
	"slices"
	"strconv"
)

// peerKeyRE is a peer's key as `microvm peer key` prints it.
var peerKeyRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// peers checks the file's peers: host names, host:port addresses and
// keys as microvm peer key prints them.
func (v *validator) peers(peers map[string]Peer) {
	for _, name := range slices.Sorted(maps.Keys(peers)) {
		p := joinPath("peers", name)
		if !hostNameRE.MatchString(name) {
			v.r.addf(p, "%q is not a host name", name)
		}
		pe := peers[name]
		host, port, err := net.SplitHostPort(pe.Address)
		if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
			v.r.addf(joinPath(p, "address"), "%q is not host:port (the daemon's --peer-listen address)", pe.Address)
		}
		if !peerKeyRE.MatchString(pe.Key) {
			v.r.addf(joinPath(p, "key"), "%q is not a peer key: sha256: and 64 hex digits, as microvm peer key prints it on that host", pe.Key)
		}
	}
}
