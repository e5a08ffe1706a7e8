package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/store"
)

// compareVerified signs ref's image with cosign (a key pair made for the
// run, no transparency log; any HTTPS cosign would open beyond the
// loopback registry goes to a closed port) and alternates concurrent
// pulls that check the signature against that key with pulls that do not.
func compareVerified(work string, freshFS bool, ref, cosign string, img v1.Image, jobs, rounds int, delay time.Duration) error {
	keys, err := os.MkdirTemp("", "pullbench-keys-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(keys)
	host := strings.SplitN(ref, "/", 2)[0]
	run := func(args ...string) error {
		cmd := exec.Command(cosign, args...)
		cmd.Dir = keys
		cmd.Env = []string{"HOME=" + keys, "PATH=/usr/bin:/bin", "COSIGN_PASSWORD=", "COSIGN_YES=true",
			"HTTPS_PROXY=http://127.0.0.1:9", "HTTP_PROXY=http://127.0.0.1:9", "NO_PROXY=" + host}
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("cosign %s: %v\n%s", args[0], err, out)
		}
		return nil
	}
	pinned := strings.Replace(ref, "sandbox:latest", "sandbox@"+digest(img), 1)
	if err := run("generate-key-pair", "--output-key-prefix", filepath.Join(keys, "k")); err != nil {
		return err
	}
	if err := run("sign", "--key", filepath.Join(keys, "k.key"), "--tlog-upload=false", "--use-signing-config=false", "--allow-http-registry", pinned); err != nil {
		return err
	}
	check, err := launch.Verification(config.ImagePolicy{Keys: []string{filepath.Join(keys, "k.pub")}})
	if err != nil {
		return err
	}
	var checks []time.Duration
	timed := store.VerifyFunc(func(ctx context.Context, repo name.Repository, digests []v1.Hash, opts []remote.Option) ([]string, error) {
		t := time.Now()
		ids, err := check(ctx, repo, digests, opts)
		checks = append(checks, time.Since(t))
		return ids, err
	})
	var plain, verified []time.Duration
	for i := range rounds * 2 {
		round := filepath.Join(work, fmt.Sprint(i))
		var f store.VerifyFunc
		if i%2 == 1 {
			f = timed
		}
		d, err := pullOnce(round, ref, jobs, delay, false, img, f)
		if err != nil {
			return err
		}
		if freshFS {
			os.RemoveAll(round)
		}
		if f != nil {
			verified = append(verified, d)
		} else {
			plain = append(plain, d)
		}
	}
	mp, mv := median(plain), median(verified)
	fmt.Printf("without a policy: median %s\nwith the signature checked: median %s (the check itself: median %s)\nratio: %.2fx\n",
		mp, mv, median(checks), float64(mv)/float64(mp))
	return nil
}
