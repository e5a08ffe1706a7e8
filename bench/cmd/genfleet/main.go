// Command genfleet writes a generated N-VM config file (bench.FleetYAML) to
// stdout, for timing the microvm command line on large fleets.
package main

import (
	"flag"
	"os"

	"microvm.dev/microvm/bench"
)

func main() {
	n := flag.Int("n", 1000, "number of VMs")
	flag.Parse()
	os.Stdout.Write(bench.FleetYAML(*n))
}
