package config

import (
	"fmt"
	"strings"
)

// MaxKernelParams is the most bytes a VM's kernelParams may add to the
// command line (joined by spaces): the kernel's own limit is 2048 bytes on
// x86_64, and microvm's parameters take up to a few hundred of them.
const MaxKernelParams = 1024

// ownedKernelParams are the parameters microvm sets itself, with why a VM
// may not set them: the console it reads the boot from, what a panic or a
// reboot does, the clock it calibrates under emulation, and the root and
// init it boots.
var ownedKernelParams = map[string]string{
	"console":       "microvm reads the boot from the serial console it names",
	"panic":         "microvm powers the VM off on a panic so the host sees it fail",
	"reboot":        "microvm sets how the guest reboots (a reboot ends the hypervisor; the daemon restarts it)",
	"tsc":           "microvm sets the clock source under emulation",
	"tsc_early_khz": "microvm sets the TSC frequency under emulation",
	"root":          "the root is assembled by microvm-init from the VM's image",
	"rootfstype":    "the root is assembled by microvm-init from the VM's image",
	"rootflags":     "the root is assembled by microvm-init from the VM's image",
	"rootwait":      "the root is assembled by microvm-init from the VM's image",
	"rootdelay":     "the root is assembled by microvm-init from the VM's image",
	"nfsroot":       "the root is assembled by microvm-init from the VM's image",
	"ro":            "the root is assembled by microvm-init from the VM's image",
	"rw":            "the root is assembled by microvm-init from the VM's image",
	"init":          "microvm-init is the first process (init: image hands over to the image's own init)",
	"rdinit":        "microvm-init is the first process (init: image hands over to the image's own init)",
	"initrd":        "the initramfs is microvm's",
	"noinitrd":      "the initramfs is microvm's",
	"--":            "arguments after -- go to the init, which is microvm-init",
}

// checkKernelParam returns why p may not be one of a VM's kernelParams
// ("" if it may).
func checkKernelParam(p string) string {
	if p == "" {
		return "a kernel parameter is empty"
	}
	for _, r := range p {
		if r <= ' ' || r > '~' || r == '"' {
			return fmt.Sprintf("kernel parameter %q holds a space, a quote or a character that is not printable ASCII (one parameter an item)", p)
		}
	}
	key, _, _ := strings.Cut(p, "=")
	if strings.HasPrefix(key, "microvm.") {
		return fmt.Sprintf("kernel parameter %q is microvm's own (microvm.* parameters are set by microvm)", p)
	}
	if why, ok := ownedKernelParams[key]; ok {
		return fmt.Sprintf("kernel parameter %q is microvm's own: %s", p, why)
	}
	return ""
}

// kernelParams checks a VM's (or the defaults') kernelParams at path.
func (v *validator) kernelParams(path string, params []string) {
	total := 0
	for i, p := range params {
		if msg := checkKernelParam(p); msg != "" {
			v.r.addf(indexPath(path, i), "%s", msg)
		}
		total += len(p) + 1
	}
	if total > MaxKernelParams {
		v.r.addf(path, "kernelParams add %d bytes to the kernel's command line, more than %d", total, MaxKernelParams)
	}
}
