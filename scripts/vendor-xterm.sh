#!/usr/bin/env bash
# Refreshes the web console's vendored xterm.js (internal/webui/assets/
# vendor/) from the npm registry: the ES module build, its stylesheet and
# its licence, at the version given (default the one vendored), so that the
# Go build alone embeds a working console. Prints the files' SHA-256 sums.
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:-6.0.0}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "@xterm/xterm@$version" >/dev/null && tar xzf xterm-xterm-"$version".tgz)
out=internal/webui/assets/vendor
# The source map is not shipped: drop the comment that names it.
sed 's|^//# sourceMappingURL=.*$||' "$tmp/package/lib/xterm.mjs" > "$out/xterm.mjs"
cp "$tmp/package/css/xterm.css" "$out/xterm.css"
cp "$tmp/package/LICENSE" "$out/xterm.LICENSE"
echo "xterm.js $version" > "$out/VERSION"
sha256sum "$out"/*
