package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"

	"microvm.dev/microvm/internal/confine"
)

// runConfine is `microvm confine --root DIR [--ro P] [--rw P] [--dev D]
// -- COMMAND…`: the launcher's wrapper that shuts an unprivileged
// hypervisor into a root of its own (internal/confine). It is not a cobra
// command: everything after -- is the hypervisor's, flags included. It
// runs as root; started by hand outside new namespaces it makes them.
func runConfine(args []string, stderr io.Writer) int {
	spec, argv, err := confine.Parse(args)
	if err != nil {
		fmt.Fprintln(stderr, "microvm:", err)
		return 2
	}
	if !confine.Isolated() {
		code, err := confine.Run()
		if err != nil {
			fmt.Fprintln(stderr, "microvm:", err)
		}
		return code
	}
	if err := confine.Enter(spec); err != nil {
		fmt.Fprintln(stderr, "microvm:", err)
		return 1
	}
	bin, err := exec.LookPath(argv[0]) // in the new root
	if err != nil {
		fmt.Fprintf(stderr, "microvm: confine: %v\n", err)
		return 127
	}
	err = syscall.Exec(bin, argv, os.Environ())
	fmt.Fprintf(stderr, "microvm: confine: exec %s: %v\n", bin, err)
	return 126
}
