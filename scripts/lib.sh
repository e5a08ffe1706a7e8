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

# die stops the script with a reason.
die() {
	echo "$0: $*" >&2
	exit 1
}

# check_release stops on a system the scripts do not support: they run on
# Debian 12 and 13 and Ubuntu 22.04 and 24.04 (the package names and the
# kernel package differ elsewhere).
check_release() {
	[ -r /etc/os-release ] || die "no /etc/os-release: the scripts support Debian 12 and 13, Ubuntu 22.04 and 24.04"
	. /etc/os-release
	case "$ID:$VERSION_ID" in
	debian:12 | debian:13 | ubuntu:22.04 | ubuntu:24.04) ;;
	*) die "${PRETTY_NAME:-this system} is not supported: the scripts support Debian 12 and 13, Ubuntu 22.04 and 24.04 (set MICROVM_ANY_RELEASE=1 to try anyway)" ;;
	esac
}

# go_switches says whether the go on PATH is Go 1.21 or later, which
# fetches the toolchain go.mod asks for from the Go module proxy itself
# (GOTOOLCHAIN=auto, checked against the checksum database).
go_switches() {
	command -v go >/dev/null 2>&1 || return 1
	local v major rest minor
	v=$(go env GOVERSION 2>/dev/null) || return 1
	v=${v#go}
	major=${v%%.*}
	rest=${v#*.}
	minor=${rest%%.*}
	[ "$major" -gt 1 ] 2>/dev/null || [ "$minor" -ge 21 ] 2>/dev/null
}

# distro_go is the newest Go 1.21 or later the distribution installed
# beside its default one (/usr/lib/go-1.N), or nothing.
distro_go() {
	local d
	for d in $(ls -d /usr/lib/go-1.* 2>/dev/null | sort -t. -k2 -n); do
		[ "${d##*.}" -ge 21 ] 2>/dev/null && [ -x "$d/bin/go" ] && echo "$d"
	done | tail -1
}

# install_distro_go installs a Go 1.21 or later from the distribution:
# Debian 13's and Ubuntu 24.04's own golang-go; Debian 12's from
# bookworm-backports (its own is 1.19); Ubuntu 22.04's golang-1.22 or
# golang-1.21 where its archive has them.
install_distro_go() {
	. /etc/os-release
	export DEBIAN_FRONTEND=noninteractive
	case "$ID:$VERSION_ID" in
	debian:12)
		if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
			echo "deb http://deb.debian.org/debian bookworm-backports main" >/etc/apt/sources.list.d/microvm-backports.list
		fi
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends -t bookworm-backports golang-1.23 ca-certificates >/dev/null
		;;
	ubuntu:22.04)
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends golang-1.22 ca-certificates >/dev/null 2>&1 ||
			apt-get install -y -qq --no-install-recommends golang-1.21 ca-certificates >/dev/null 2>&1 ||
			die "Ubuntu 22.04's archive offers no golang-1.22 or golang-1.21 here: install Go 1.21 or later into /usr/local/go"
		;;
	*)
		apt_install golang-go ca-certificates
		;;
	esac
}

# ensure_go puts on PATH a Go that builds the module: the one in
# /usr/local/go if present, else the distribution's when it is 1.21 or
# later (installing one that is: install_distro_go), which then fetches the
# toolchain go.mod asks for from the Go module proxy, as Go's toolchain
# switching does (GOTOOLCHAIN=auto).
ensure_go() {
	export PATH="/usr/local/go/bin:$HOME/go/bin:$PATH"
	export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
	if ! go_switches; then
		local d
		d=$(distro_go)
		if [ -z "$d" ] && ! { command -v go >/dev/null 2>&1 && go_switches; }; then
			install_distro_go
			d=$(distro_go)
		fi
		[ -n "$d" ] && export PATH="$d/bin:$PATH"
		go_switches || die "no Go 1.21 or later could be installed; install one into /usr/local/go"
	fi
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
	[ "${MICROVM_ANY_RELEASE:-0}" = 1 ] || check_release
	apt_install "${PROJECT_PACKAGES[@]}"
	ensure_go
	ensure_vmm_user
}
