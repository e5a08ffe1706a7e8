package testutil

import (
	"path/filepath"
	"testing"
)

// CosignCache is where CosignBinary keeps what it builds, one directory
// per version of the tools module.
const CosignCache = "/var/cache/microvm/cosign"

// CosignPackages are what CosignBinary builds of tools/cosign.
func CosignPackages() []string { return []string{"github.com/sigstore/cosign/v3/cmd/cosign"} }

// CosignBinary builds sigstore's cosign from its Go module (tools/cosign)
// once per version of that module and returns its path.
func CosignBinary(t testing.TB) string {
	t.Helper()
	return filepath.Join(BuildTools(t, "cosign", CosignCache, CosignPackages()...), "cosign")
}
