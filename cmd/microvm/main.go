// Command microvm runs a small, isolated fleet of micro-VMs on one Linux host
// from a declarative file kept in git. This package only parses flags and
// prints; every verb calls a package under internal/.
package main

import (
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
