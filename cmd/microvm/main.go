// Command microvm runs a small, isolated fleet of micro-VMs on one Linux host
// from a declarative file kept in git. This package only parses flags and
// prints; every verb calls a package under internal/.
package main

import (
	"os"

	"microvm.dev/microvm/internal/confine"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == confine.Command {
		// The launcher's wrapper around a hypervisor: not a verb for users.
		os.Exit(runConfine(os.Args[2:], os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
