package daemon

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/secrets"
	"microvm.dev/microvm/internal/tailnet"
	"microvm.dev/microvm/internal/testutil"
)

// Against Tailscale's own tailscaled (built by tools/tailnet) in the test's
// namespace, logged in to Tailscale's test control server: an apply
// advertises the VM subnets (the tailnet approves them), an unchanged apply
// changes nothing, a tailscaled logged out gets its routes once it is logged
// in, without another apply, and with no tailscale installed the apply
// succeeds and says why.
func TestApplyAdvertisesVMSubnets(t *testing.T) {
	tools, ns, url, node := testutil.TailnetHost(t, "dts", "0.0.0.0/0,::/0")
	st := t.TempDir()
	var log testutil.SyncBuffer
	d, err := New(launch.Env{StateDir: st, RunDir: filepath.Join(st, "run"), NetNS: ns.Path}, slog.New(slog.NewTextHandler(&log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.Tailscale = tailnet.Client{Bin: tools.Tailscale}
	src := `host: { externalInterface: none0, ipv6Prefix: none, tailscale: { advertiseRoutes: true, socket: ` + node.Socket + ` } }
vms:
  a: { index: 1, autostart: false }
  b: { subnet: 192.168.50.0/24, autostart: false }
`
	// The uplink must exist for validation: give the namespace one.
	ns.IP(t, "link", "add", "none0", "type", "bridge")

	// Logged out: the apply succeeds, saying so.
	res, err := d.ApplyFile("t.yaml", []byte(src))
	if err != nil || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "not logged in") {
		t.Fatalf("apply before login: %v %v", err, res.Warnings)
	}
	// Logged in afterwards: the daemon advertises within its retry.
	node.Up(t, url, "hv")
	routes := func() []string { return node.Status(t).Self.PrimaryRoutes }
	deadline := time.Now().Add(3 * tailnetRetry)
	for strings.Join(routes(), ",") != "10.1.0.0/24,192.168.50.0/24" {
		if time.Now().After(deadline) {
			t.Fatalf("approved routes %v; daemon log:\n%s\ntailscaled:\n%s", routes(), log.String(), node.Log())
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Applying again changes nothing.
	before := strings.Count(log.String(), "tailscale routes advertised")
	if _, err := d.ApplyFile("t.yaml", []byte(src)); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(log.String(), "tailscale routes advertised"); n != before {
		t.Errorf("an unchanged apply set routes again:\n%s", log.String())
	}
	// Without tailscale the apply succeeds and says why routes are missing.
	d.Tailscale = tailnet.Client{Bin: filepath.Join(st, "missing")}
	res, err = d.ApplyFile("t.yaml", []byte(src))
	if err != nil || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "tailscale command is not installed") {
		t.Errorf("without tailscale: %v %v", err, res.Warnings)
	}
}

// A run record damaged on disk: the daemon refuses to start with an error
// naming the file, rather than inventing state (and never touches a VM).
func TestCorruptRunRecordRefused(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNetns(t, "dcr")
	st := t.TempDir()
	os.MkdirAll(filepath.Join(st, "vms", "vm1"), 0o700)
	rec := filepath.Join(st, "vms", "vm1", "run.json")
	os.WriteFile(rec, []byte(`{"name": "vm1", "pid": 12`), 0o600) // truncated
	_, err := New(launch.Env{StateDir: st, RunDir: filepath.Join(st, "run"), NetNS: ns.Path}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), rec) {
		t.Fatalf("err = %v, want one naming %s", err, rec)
	}
	testutil.Report(t, testutil.FaultResult{Fault: "a run record truncated on disk", Trials: 1, Result: "the daemon refuses to start, naming the file; no state invented"})
}

// A file whose secret this host cannot decrypt is refused before anything
// changes: no VM starts and no bridge is made.
func TestApplyRefusesUndecryptableSecrets(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNetns(t, "dsec")
	st := t.TempDir()
	mine, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "age.key")
	os.WriteFile(keyFile, []byte(mine.String()+"\n"), 0o600)
	ids, err := secrets.LoadIdentities([]string{keyFile}, false)
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(launch.Env{StateDir: st, RunDir: filepath.Join(st, "run"), NetNS: ns.Path, Identities: ids}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	other, _ := age.GenerateX25519Identity()
	foreign, _ := secrets.Encrypt([]byte("not for this host"), other.Recipient())
	src := "vms:\n  a:\n    index: 1\n    secrets:\n      - path: /run/secrets/token\n        age: |\n" + testutil.Indent(foreign, "          ") + "\n"
	res, err := d.ApplyFile("t.yaml", []byte(src))
	if !errors.Is(err, ErrInvalid) || res == nil || len(res.Problems) != 1 || res.Problems[0].Path != "vms.a.secrets[0]" ||
		!strings.Contains(res.Problems[0].Message, "not encrypted to this host's keys ("+mine.Recipient().String()+")") {
		t.Fatalf("apply: %v %+v", err, res)
	}
	if out, _ := ns.Exec("ip", "-o", "link", "show"); strings.Contains(out, "br-a") {
		t.Errorf("a refused apply made the bridge:\n%s", out)
	}
	if len(d.sup.List()) != 0 {
		t.Errorf("a refused apply left VMs: %+v", d.sup.List())
	}
	testutil.Report(t, testutil.FaultResult{Fault: "a file whose secret this host cannot decrypt", Trials: 1,
		Result: "refused before any change, naming the secret and this host's recipients; no VM, no bridge"})
}
