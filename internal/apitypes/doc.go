// Package apitypes holds the wire types of the daemon's HTTP API: every
// request, response and event body the server writes and its clients
// read, with their JSON names. The server, the API client
// (internal/api), the command line and microvm-kubelet share these types,
// so a client links this package and not the daemon; the packages that
// make the values (the supervisor, the daemon, the network) name them by
// alias. Their JSON is pinned by golden files (testdata/), so renaming a
// Go field cannot change the wire silently.
package apitypes
