#!/usr/bin/env bash
# Builds a Debian root filesystem from Debian's own packages with mmdebstrap
# (once: cached by suite, variant and package list) and prints the
# tarball's path. Usage: build-debian-image.sh [PACKAGE,...]
# SUITE (bookworm), VARIANT (minbase), HOOK (a shell command run on the
# finished root, at "$1", before it is packed: mmdebstrap's customize hook)
# and MICROVM_IMAGE_CACHE (/var/cache/microvm/images) may be set. Run as
# root.
set -euo pipefail
suite="${SUITE:-bookworm}"
variant="${VARIANT:-minbase}"
pkgs="${1:-}"
cache="${MICROVM_IMAGE_CACHE:-/var/cache/microvm/images}"
hook="${HOOK:-}"
key="$(printf '%s\n' "$suite" "$variant" "$pkgs" "$hook" 1 | sha256sum | cut -c1-16)"
out="$cache/debian-$suite-$variant-$key.tar"
if [ -s "$out" ]; then echo "$out"; exit 0; fi
mkdir -p "$cache"
exec 9>"$out.lock"
flock 9
if [ -s "$out" ]; then echo "$out"; exit 0; fi
echo "==> mmdebstrap $suite ($variant${pkgs:+, $pkgs}) into $out" >&2
mmdebstrap --quiet --format=tar --variant="$variant" ${pkgs:+--include="$pkgs"} \
	${hook:+--customize-hook="$hook"} "$suite" "$out.partial.tar" http://deb.debian.org/debian >&2
mv "$out.partial.tar" "$out"
echo "$out"
