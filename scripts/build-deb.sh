#!/usr/bin/env bash
# Build the Debian packages with nfpm (a Go tool pinned in go.mod), one per
# architecture, cross-compiled from this machine:
#   scripts/build-deb.sh [OUTDIR] [VERSION]   → OUTDIR/microvm_VERSION_ARCH.deb
# ARCHES lists Debian architectures (default "amd64 arm64": the reference
# setup's host is arm64).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist/out}"
version="${2:-0.1.0}"
arches="${ARCHES:-amd64 arm64}"
STAGE=dist/stage
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$out"
for arch in $arches; do
	case "$arch" in
	amd64 | arm64) goarch="$arch" ;;
	*) echo "build-deb: unsupported architecture $arch (amd64, arm64)" >&2; exit 2 ;;
	esac
	rm -rf "$STAGE"
	mkdir -p "$STAGE"
	CGO_ENABLED=0 GOARCH="$goarch" go build -ldflags="-X main.Version=$version" -o "$STAGE/microvm" ./cmd/microvm
	CGO_ENABLED=0 GOARCH="$goarch" go build -ldflags="-s -w" -o "$STAGE/microvm-init" ./cmd/microvm-init
	CGO_ENABLED=0 GOARCH="$goarch" go build -ldflags="-s -w -X main.Version=$version" -o "$STAGE/microvm-kubelet" ./cmd/microvm-kubelet
	VERSION="$version" DEB_ARCH="$arch" go tool nfpm pkg --config dist/nfpm.yaml --packager deb --target "$out" >&2
	ls "$out/microvm_${version}_${arch}.deb"
done
