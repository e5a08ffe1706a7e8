// Package e2e holds the end-to-end tests: real QEMU booting real kernels
// (TCG where there is no /dev/kvm) with microvm's own initramfs, inside
// network namespaces the tests create. They need root; TestMain builds
// microvm-init, finds the kernel and builds the base image once for all.
package e2e
