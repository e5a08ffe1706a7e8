// Package guest prepares what a VM boots: it resolves the kernel and its
// modules, and writes the initramfs (microvm-init, the kernel modules the
// guest needs with their dependencies, and the per-VM spec appended as a
// second archive). The Spec type is shared with cmd/microvm-init, which reads
// it at boot.
package guest
