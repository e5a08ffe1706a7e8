#!/usr/bin/env bash
# The test suite: installs what the tests need, then runs vet, every test
# (host-network tests run in network namespaces they create and remove) and
# each fuzz target for a bounded time. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
setup
go mod download
# Guest images in the tests are made from Debian's own packages
# (mmdebstrap) and served by Debian's registry (docker-registry), which the
# tests start themselves: its packaged service is not left running; the
# tests' stand-in for the internet's DNS is Debian's dnsmasq.
apt_install mmdebstrap docker-registry dnsmasq-base
# GitOps over SSH is tested against OpenSSH's own sshd, which the test
# starts on loopback with a configuration of its own: the package's
# service is not left running.
apt_install openssh-server
# Backups off the host are sent with Debian's restic.
apt_install restic
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
	systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
	systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
fi
# The web console's browser test: Debian's chromium, driven by Playwright
# (playwright-core from npm, e2e/ui/package-lock.json) with the machine's
# Node.js (20 or later), installed outside the checkout and kept between
# runs.
apt_install chromium fonts-dejavu-core
command -v node >/dev/null 2>&1 || apt_install nodejs npm
ui=/var/cache/microvm/ui-tests
if ! cmp -s e2e/ui/package-lock.json "$ui/package-lock.json" || [ ! -d "$ui/node_modules/playwright-core" ]; then
	echo "==> npm ci (playwright-core) in $ui"
	mkdir -p "$ui"
	cp e2e/ui/package.json e2e/ui/package-lock.json "$ui/"
	(cd "$ui" && npm ci --no-audit --no-fund --loglevel=error)
fi
# The kernel the VM tests boot (this machine has no usable /boot), and the
# arm64 kernel and emulator for the aarch64 guest test (which skips, saying
# so, if Debian's arm64 packages cannot be fetched).
bash scripts/fetch-kernel.sh >/dev/null
if apt_install qemu-system-arm && bash scripts/fetch-kernel.sh arm64 >/dev/null; then :; else
	echo "warning: no arm64 kernel or emulator; the aarch64 guest test will be skipped" >&2
fi

echo "==> go vet"
go vet ./...

# The engines the e2e tests run (Kubernetes, Tailscale, and cosign to sign
# images), built from tools/kube, tools/tailnet and tools/cosign into
# /var/cache/microvm before the tests start: a cold build takes about 15
# minutes, which no package's time limit should hold.
echo "==> the tests' engines"
go run ./internal/testutil/prebuild

echo "==> go test"
go test -count=1 -timeout 60m ./...

# Fuzz targets, each for a bounded time (FUZZTIME, default 20s).
fuzztime="${FUZZTIME:-20s}"
for target in "FuzzParse ./internal/config" "FuzzParseSpec ./internal/guest" "FuzzAPIRequest ./internal/apiserver"; do
	set -- $target
	echo "==> fuzz $1 for $fuzztime"
	go test -run '^$' -fuzz "^$1\$" -fuzztime "$fuzztime" "$2"
done
