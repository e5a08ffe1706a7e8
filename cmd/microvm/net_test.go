package main

import (
	"encoding/json"
	"strings"
	"testing"

	"microvm.dev/microvm/internal/network"
	"microvm.dev/microvm/internal/testutil"
)

// TestNetVerbs drives net apply, show and teardown through the command line
// inside a namespace the test creates.
func TestNetVerbs(t *testing.T) {
	ns := testutil.NewNetns(t, "cli")
	testutil.RequireCommand(t, "nft")
	ns.IP(t, "link", "add", "up0", "type", "bridge")
	ns.IP(t, "addr", "add", "203.0.113.1/24", "dev", "up0")
	ns.IP(t, "link", "set", "up0", "up")
	ns.IP(t, "route", "add", "default", "via", "203.0.113.2")
	nsFlag := "--netns=" + ns.Path

	code, out, errOut := runCLI(t, nsFlag, "net", "apply", "-f", reference)
	if code != 0 || !strings.Contains(out, "create-bridge br-vm1") || !strings.Contains(out, "load nftables table inet microvm") {
		t.Fatalf("apply: exit %d\n%s\n%s", code, out, errOut)
	}
	code, out, _ = runCLI(t, nsFlag, "net", "apply", "-f", reference, "-o", "json")
	var res network.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 0 || res.Changed() || res.Uplink != "up0" {
		t.Fatalf("second apply: exit %d, %+v, %v\n%s", code, res, err, out)
	}
	code, out, _ = runCLI(t, nsFlag, "net", "show", "-f", reference)
	if code != 0 || !strings.Contains(out, "in sync with the file") || !strings.Contains(out, "10.5.0.1/24") {
		t.Fatalf("show: exit %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, nsFlag, "render", "nftables", "-f", reference)
	if code != 0 || !strings.Contains(out, `oifname "up0" ip saddr @vm_subnets masquerade`) {
		t.Fatalf("render in the namespace should resolve its uplink: exit %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, nsFlag, "net", "teardown")
	if code != 0 || !strings.Contains(out, "delete-bridge br-vm5") || !strings.Contains(out, "delete nftables table") {
		t.Fatalf("teardown: exit %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, nsFlag, "net", "show", "-f", reference)
	if code != 0 || !strings.Contains(out, "NOT in sync") || !strings.Contains(out, "absent") {
		t.Fatalf("show after teardown: exit %d\n%s", code, out)
	}
}

// TestNetApplyRefusesOverlap: validation against the namespace's own
// addresses stops the apply before anything changes.
func TestNetApplyRefusesOverlap(t *testing.T) {
	ns := testutil.NewNetns(t, "clo")
	ns.IP(t, "link", "add", "lan0", "type", "bridge")
	ns.IP(t, "addr", "add", "10.3.0.9/16", "dev", "lan0")
	code, _, errOut := runCLI(t, "--netns="+ns.Path, "net", "apply", "-f", reference)
	if code != 1 || !strings.Contains(errOut, "vms.vm3.index: subnet 10.3.0.0/24 overlaps 10.3.0.9/16 on the host's interface lan0") {
		t.Fatalf("exit %d, %s", code, errOut)
	}
	if out, _ := ns.Exec("ip", "-br", "link"); strings.Contains(out, "br-vm") {
		t.Errorf("a refused apply created interfaces:\n%s", out)
	}
}
