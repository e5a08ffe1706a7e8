package bench

import (
	"fmt"
	"strings"
)

// FleetYAML generates a config file of n VMs shaped like the reference fleet
// (defaults with a 64G data volume, one SSH key, a service port on every
// tenth VM, an allow rule and a forward per hundred VMs). Subnets are
// 10.<i/250>.<i%250>.0/24, so up to 62,500 VMs fit.
func FleetYAML(n int) []byte {
	var b strings.Builder
	b.WriteString(`host: { externalInterface: auto, tailscale: { advertiseRoutes: true } }
defaults:
  vcpu: 2
  memory: 1G
  image: base
  volumes:
    - { name: data, mountPoint: /mnt/storage, size: 64G }
  sshKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ bench"]
vms:
`)
	for i := range n {
		fmt.Fprintf(&b, "  vm%d:\n    subnet: 10.%d.%d.0/24\n", i, 10+i/250, i%250)
		if i%10 == 0 {
			b.WriteString("    ports: [8080]\n")
		}
	}
	b.WriteString("network:\n  allow:\n")
	for i := 0; i+1 < n; i += 100 {
		fmt.Fprintf(&b, "    - { from: vm%d, to: vm%d, ports: [\"5432/tcp\"] }\n", i, i+1)
	}
	b.WriteString("  forwards:\n")
	for i := 0; i < n; i += 100 {
		fmt.Fprintf(&b, "    - { hostPort: %d, to: \"vm%d:8080\" }\n", 10000+i, i)
	}
	return []byte(b.String())
}
