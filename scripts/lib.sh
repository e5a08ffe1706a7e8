# Shared by the scripts in this folder: finding Go and installing the Debian
# packages the project needs. Source it; it defines functions only.

# need_root stops unless running as root.
need_root() {
	if [ "$(id -u)" != 0 ]; then
		echo "$0: run this as root (it installs packages and creates network namespaces)" >&2
		exit 1
	fi
}

# apt_install installs the Debian packages given that are not installed yet.
apt_install() {
	local missing=()
	for p in "$@"; do
		dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	echo "==> installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ensure_go puts a Go toolchain on PATH: the one in /usr/local/go if present,
# else Debian's golang-go, which fetches the toolchain go.mod asks for from
# the Go module proxy (GOTOOLCHAIN=auto, Go 1.21 or later).
ensure_go() {
	export PATH="/usr/local/go/bin:$HOME/go/bin:$PATH"
	if ! command -v go >/dev/null 2>&1; then
		apt_install golang-go ca-certificates
	fi
	export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
	go version
}

# Packages the project needs on the host: nft for the firewall; iproute2 and
# util-linux (unshare, nsenter) for network namespaces; QEMU to run VMs;
# e2fsprogs to format and check volumes; kmod (depmod) to index fetched
# kernels' modules; busybox-static for the base image; iputils-ping for ICMP
# checks; openssh-client to reach VMs from the fleet script; git for GitOps;
# ca-certificates for the module proxy; xz-utils to extract the PVH vmlinux
# from a bzImage (the kernel's xz carries a filter only xz-utils decodes).
PROJECT_PACKAGES=(nftables iproute2 util-linux qemu-system-x86 e2fsprogs kmod busybox-static iputils-ping openssh-client git ca-certificates xz-utils)

# VMM_IDS is the hypervisors' subordinate id range (65536 ids from
# 0x70000000, far above the ranges useradd gives people).
VMM_IDS=1879048192-1879113727

# ensure_vmm_user creates the unprivileged user hypervisors run as
# (microvm), in group nogroup: not the microvm group, which may use the
# API socket; and gives it a subordinate id range, of which each VM's
# hypervisor takes an id of its own (docs/security.md).
ensure_vmm_user() {
	id -u microvm >/dev/null 2>&1 ||
		useradd --system --gid nogroup --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin microvm
	if ! grep -qs '^microvm:' /etc/subuid || ! grep -qs '^microvm:' /etc/subgid; then
		usermod --add-subuids "$VMM_IDS" --add-subgids "$VMM_IDS" microvm
	fi
}


# setup is every script's start: root, the project's packages, Go, the
# hypervisors' user.
setup() {
	need_root
	apt_install "${PROJECT_PACKAGES[@]}"
	ensure_go
	ensure_vmm_user
}
