package launch

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/vmm"
	"microvm.dev/microvm/internal/volume"
)

// guestSpec is what microvm-init is told about its VM: network, store,
// volumes, SSH identities, secrets and the workload (or the image's init).
// Volumes created by this launch are populated from the image (Docker's
// named volume behaviour).
func guestSpec(env Env, vm *config.VM, res *Resolved, volumes map[string]volume.Action, hostPEM []byte, authorized []string, secrets []guest.SecretFile) *guest.Spec {
	// The VM's resolver is the daemon's DNS server on its gateway
	// (internal/resolver) unless the host names others.
	dns := env.DNS
	if len(dns) == 0 {
		dns = []string{vm.Net.Gateway.String()}
	}
	var search []string
	if vm.Net.Domain != "" {
		search = []string{vm.Net.Domain}
	}
	spec := &guest.Spec{
		Name: vm.Name,
		Net: guest.NetSpec{
			MAC:     vm.Net.MAC,
			Address: fmt.Sprintf("%s/%d", vm.Net.Address, vm.Net.Subnet.Bits()),
			Gateway: vm.Net.Gateway.String(),
			DNS:     dns,
			Search:  search,
		},
		Store:   guest.ShareSpec{Tag: "store", FSType: "9p"},
		SSH:     guest.SSHSpec{HostKey: string(hostPEM), AuthorizedKeys: authorized},
		Secrets: secrets,
	}
	if n := vm.Net; n.HasIPv6() {
		spec.Net.Address6 = fmt.Sprintf("%s/%d", n.Address6, n.Subnet6.Bits())
		spec.Net.Gateway6 = n.Gateway6.String()
	}
	devices := res.Backend.DiskDevices(res.Launch)
	switch res.Share {
	case vmm.ShareVirtiofs:
		spec.Store.FSType = "virtiofs"
	case vmm.ShareBlock:
		spec.Store = guest.ShareSpec{FSType: "ext4", Serial: vmm.StoreSerial, Device: devices[vmm.StoreSerial]}
	}
	for _, v := range vm.Volumes {
		spec.Volumes = append(spec.Volumes, guest.VolumeSpec{Name: v.Name, MountPoint: v.MountPoint, Device: devices[v.Name],
			Populate: volumes[v.Name] == volume.Created})
	}
	if res.Launch.Modules != "" {
		spec.Modules = &guest.DiskSpec{Serial: vmm.ModulesSerial, Device: devices[vmm.ModulesSerial]}
	}
	spec.SwitchRoot = vm.Init == config.InitImage
	spec.Workload = Workload(vm, res.Image.Config)
	spec.MachineID = machineID(vm.Name, hostPEM)
	return spec
}

// machineID is a VM's stable machine-id: derived from its name and its host
// key, which lives as long as the VM's directory.
func machineID(name string, hostKey []byte) string {
	sum := sha256.Sum256(append([]byte("microvm machine-id\x00"+name+"\x00"), hostKey...))
	return hex.EncodeToString(sum[:16])
}
