package testutil

import (
	"os"
	"path/filepath"
	"testing"
)

// FakeTailscale writes a stand-in `tailscale` command into dir and returns
// its path: Tailscale
// cannot run here (no tailscaled, no tailnet). It records its arguments in
// dir/calls and keeps the advertised routes in dir/routes.
func FakeTailscale(t testing.TB, dir string) string {
	t.Helper()
	script := `#!/bin/sh
d=$(dirname "$0")
echo "$*" >> "$d/calls"
case "$1 $2" in
"debug prefs") printf '{"AdvertiseRoutes": [%s]}\n' "$(cat "$d/routes" 2>/dev/null)";;
"set --advertise-routes="*) echo "${2#--advertise-routes=}" | sed 's/[^,][^,]*/"&"/g' > "$d/routes";;
*) echo "unexpected: $*" >&2; exit 1;;
esac
`
	bin := filepath.Join(dir, "tailscale")
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}
