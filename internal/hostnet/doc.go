// Package hostnet reads and changes the host's network through netlink: the
// uplink (default route interface), the host's addresses, and the bridges,
// TAPs, addresses and sysctls each VM needs.
package hostnet
