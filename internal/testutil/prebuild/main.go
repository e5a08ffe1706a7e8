// Command prebuild builds the engines the tests run (tools/kube's etcd
// and Kubernetes binaries, tools/tailnet's Tailscale, tools/cosign's
// cosign, tools/s3's S3 gateway) into their caches before the tests start
// (scripts/test.sh), so that no test package's time limit holds a cold
// build of them.
package main

import (
	"fmt"
	"os"
	"time"

	"microvm.dev/microvm/internal/testutil"
)

func main() {
	for _, t := range []struct {
		module, cache string
		pkgs          []string
	}{
		{"kube", testutil.KubeCache, testutil.KubePackages()},
		{"tailnet", testutil.TailnetCache, testutil.TailnetPackages()},
		{"cosign", testutil.CosignCache, testutil.CosignPackages()},
		{"s3", testutil.S3Cache, testutil.S3Packages()},
	} {
		dir, took, err := testutil.Build(t.module, t.cache, t.pkgs...)
		if err != nil {
			fmt.Fprintln(os.Stderr, "prebuild:", err)
			os.Exit(1)
		}
		if took == 0 {
			fmt.Printf("tools/%s: cached in %s\n", t.module, dir)
		} else {
			fmt.Printf("tools/%s: built in %s into %s\n", t.module, took.Round(time.Second), dir)
		}
	}
}
