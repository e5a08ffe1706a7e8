package kubelet

import (
	"fmt"
	"net/netip"
	"os"

	"microvm.dev/microvm/internal/config"
)

// baseFile is the host's own file: its host settings, defaults and network
// exceptions, and any VMs of its own. It is applied as the daemon's file,
// as written; the pods' VMs are put beside it.
type baseFile struct {
	data []byte
	cfg  *config.Config
}

// readBase reads and validates the host's file; its VMs' names may not
// look like a pod's VM (k and 11 hex digits).
func readBase(path string) (*baseFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("the host's file: %w", err)
	}
	cfg, err := config.Parse(path, data, config.Options{})
	if err != nil {
		return nil, err
	}
	b := &baseFile{data: data, cfg: cfg}
	for _, vm := range cfg.VMs {
		if isPodVM(vm.Name) {
			return nil, fmt.Errorf("the host's file %s: VM %s is named as a pod's VM would be (k and 11 hex digits); rename it", path, vm.Name)
		}
	}
	return b, nil
}

// isPodVM says whether name is a pod's VM name.
func isPodVM(name string) bool {
	if len(name) != 12 || name[0] != 'k' {
		return false
	}
	for _, c := range name[1:] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// subnets are the host's own VMs' subnets, which no pod's may overlap.
func (b *baseFile) subnets() []netip.Prefix {
	var out []netip.Prefix
	for _, vm := range b.cfg.VMs {
		out = append(out, vm.Net.Subnet)
	}
	return out
}

// allocate is the first /size subnet of cidr that overlaps none of used.
func allocate(cidr netip.Prefix, size int, used []netip.Prefix) (netip.Prefix, error) {
	step := uint32(1) << (32 - size)
	a := cidr.Masked().Addr().As4()
	start := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	count := uint32(1) << (size - cidr.Bits())
	for i := uint32(0); i < count; i++ {
		v := start + i*step
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), size)
		free := true
		for _, u := range used {
			if u.Overlaps(p) {
				free = false
				break
			}
		}
		if free {
			return p, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("the pod CIDR %s has no free /%d left", cidr, size)
}
