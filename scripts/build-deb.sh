#!/usr/bin/env bash
# Build the Debian package with nfpm (a Go tool pinned in go.mod):
#   scripts/build-deb.sh [OUTDIR] [VERSION]   → OUTDIR/microvm_VERSION_ARCH.deb
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist/out}"
version="${2:-0.1.0}"
export VERSION="$version" DEB_ARCH="$(dpkg --print-architecture 2>/dev/null || go env GOARCH)"
STAGE=dist/stage
rm -rf "$STAGE"
mkdir -p "$STAGE"
trap 'rm -rf "$STAGE"' EXIT
go build -ldflags="-X main.Version=$version" -o "$STAGE/microvm" ./cmd/microvm
CGO_ENABLED=0 go build -ldflags="-s -w" -o "$STAGE/microvm-init" ./cmd/microvm-init
mkdir -p "$out"
go tool nfpm pkg --config dist/nfpm.yaml --packager deb --target "$out" >&2
ls "$out"/microvm_"$version"_*.deb
