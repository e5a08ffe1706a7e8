package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"microvm.dev/microvm/internal/generation"
	"microvm.dev/microvm/internal/testutil"
)

// TestRollbackBootsTheRecordedDigest: a deploy records the digest each
// VM's tag resolved to (each digest signed, the VM's imagePolicy asking
// for the key); `plan` shows the tag moving before any deploy;
// after the tag moved on (and a later deploy ran the new digest), `deploy rollback` boots the digest the old generation ran,
// not what the tag names now, and a restarted daemon keeps it so.
func TestRollbackBootsTheRecordedDigest(t *testing.T) {
	requireGuestEnv(t)
	testutil.RequireCommand(t, "git")
	reg := startRegistry(t)
	cfg := v1.Config{Entrypoint: []string{"/bin/sh", "-c", "exec sleep 86400"}}
	// Every digest the tag names is signed, and the VM's policy asks for
	// the key.
	c := newCosignLab(t, reg)
	pub, priv := c.keyPair("release")
	push := func(marker string) string {
		ref := reg.push(t, "app/web:stable", cfg, baseLayer(t), filesLayer(t, map[string]string{"etc/image": marker + "\n"}))
		c.sign(ref, priv, false)
		return ref
	}
	ref := push("one")
	first := digestRef(t, ref)
	fleet := func(gen string) string {
		return fmt.Sprintf("defaults: { vcpu: 1, memory: 256M, stopTimeout: 10s }\nvms:\n  w: { index: 1, image: %q, pullPolicy: always, env: { GEN: %q }, imagePolicy: { keys: [%q] } }\n", ref, gen, pub)
	}
	repo := newGitRepo(t)
	l := newDaemonLab(t, "pin")
	repo.push(fleet("1"), "w on stable")
	l.startDaemon("", "--git-url", repo.remote, "--git-interval", "1h", "--health-timeout", "2m")
	image := func() string {
		t.Helper()
		l.waitFor("w running", 2*time.Minute, allRunning("w"))
		out, err := l.cli("exec", "w", "--", "cat", "/etc/image")
		if err != nil {
			t.Fatalf("exec w: %v\n%s", err, out)
		}
		return strings.TrimSpace(out)
	}
	g1 := l.waitGeneration(1, 3*time.Minute)
	if g1.Status != generation.Succeeded || g1.Images["w"] != first {
		t.Fatalf("generation 1: %s, images %v, want w at %s", g1.Status, g1.Images, first)
	}
	if got := image(); got != "one" {
		t.Fatalf("w runs %q after generation 1, want one", got)
	}

	// The tag moves on: plan says so before any deploy, naming both
	// digests; the next deploy (w changed) pulls and runs it.
	push("two")
	second := digestRef(t, ref)
	out, err := l.cli("plan", "-f", l.writeFile(fleet("1")))
	if err != nil || !strings.Contains(out, "image tag moved: "+ref+" runs "+first+", the tag names "+second+" now") ||
		!strings.Contains(out, "boots the new image at its next start (pullPolicy always)") {
		t.Errorf("plan after the tag moved: %v, want it to show the move:\n%s", err, out)
	}
	repo.push(fleet("2"), "w again")
	if g := l.waitGeneration(2, 3*time.Minute); g.Status != generation.Succeeded || g.Images["w"] != second || g.Moved["w"] != first {
		t.Fatalf("generation 2: %s, images %v, moved %v, want w at %s, moved from %s", g.Status, g.Images, g.Moved, second, first)
	}
	if got := image(); got != "two" {
		t.Fatalf("w runs %q after generation 2, want two", got)
	}

	// Back to generation 1: its digest, though the tag names the second.
	if out, err := l.cli("deploy", "rollback", "1"); err != nil {
		t.Fatalf("deploy rollback 1: %v\n%s", err, out)
	}
	g3 := l.deployStatus().Last
	if g3 == nil || g3.Number != 3 || g3.Status != generation.Succeeded || g3.Images["w"] != first {
		t.Fatalf("the rollback's generation: %+v, want w at %s", g3, first)
	}
	if got := image(); got != "one" {
		t.Errorf("w runs %q after the rollback to generation 1, want one (the digest it ran then)", got)
	}
	before := l.list()["w"]
	if before.Spec == nil || before.Spec.Image != first {
		t.Fatalf("w's image after the rollback = %v, want %s", before.Spec, first)
	}

	// A restarted daemon applies the rolled-back generation again, pinned
	// the same: w is adopted as it runs, not restarted on the tag.
	l.daemon.Process.Kill()
	l.daemon.Wait()
	l.startDaemon("", "--git-url", repo.remote, "--git-interval", "1h", "--health-timeout", "2m")
	pinned := `msg="image digests pinned to the generation's" component=deploy generation=3`
	for deadline := time.Now().Add(time.Minute); strings.Count(l.log(), pinned) < 2; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the restarted daemon did not apply generation 3 pinned:\n%s", l.log())
		}
	}
	if after := l.list()["w"]; after.PID != before.PID || image() != "one" {
		t.Errorf("after a daemon restart w is pid %d (was %d) running %q, want it left running the first digest", after.PID, before.PID, image())
	}
}
