package firewall

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/testutil"
)

const richConfig = `
host: { allowedTCPPorts: [22], tailscale: { advertiseRoutes: true }, serviceCIDRs: [10.96.0.0/12, "fd00:96::/108"] }
vms:
  vm1: { index: 1, ports: [8080, "6000-6010/udp"] }
  db:  { subnet: 192.168.50.0/24 }
network:
  allow:
    - { from: vm1, to: db, ports: ["5432/tcp", "7000-7010/udp"] }
  forwards:
    - { hostPort: 8080, to: "vm1:8080" }
    - { hostPort: 5353, to: "db:53", proto: udp }
`

func parse(t testing.TB, src string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(src), config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func fleet(t testing.TB, n int) *config.Config {
	var b strings.Builder
	b.WriteString("vms:\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "  vm%d: { subnet: 10.%d.%d.0/24, ports: [8080] }\n", i, i/256, i%256)
	}
	return parse(t, b.String())
}

func TestGolden(t *testing.T) {
	ref, err := os.ReadFile("../../examples/reference/infra.yaml")
	if err != nil {
		t.Fatal(err)
	}
	testutil.Golden(t, "reference.nft", []byte(Render(parse(t, string(ref)), Options{Uplink: "eth0"}).Script()))
	testutil.Golden(t, "rich.nft", []byte(Render(parse(t, richConfig), Options{Uplink: "eth0"}).Script()))
}

func TestRenderIsDeterministic(t *testing.T) {
	a := Render(parse(t, richConfig), Options{Uplink: "eth0"})
	b := Render(parse(t, richConfig), Options{Uplink: "eth0"})
	if a != b {
		t.Fatal("two renders of one config differ")
	}
	c := Render(parse(t, richConfig), Options{Uplink: "eth1"})
	if c.Hash == a.Hash {
		t.Fatal("a different uplink must change the hash")
	}
}

// TestRuleCountIsConstant: isolation does not cost a rule per pair of VMs
// (the reference setup's n*(n-1) DROP rules); the rules stay fixed and the
// per-VM facts are set elements, so the ruleset grows linearly.
func TestRuleCountIsConstant(t *testing.T) {
	sizes := []int{2, 10, 100, 500}
	var rules, lines []int
	for _, n := range sizes {
		body := Render(fleet(t, n), Options{Uplink: "eth0"}).Body
		rules = append(rules, RuleCount(body))
		lines = append(lines, strings.Count(body, "\n"))
	}
	for i := range sizes {
		if rules[i] != rules[0] {
			t.Errorf("%d VMs: %d rules, but %d VMs: %d rules", sizes[i], rules[i], sizes[0], rules[0])
		}
	}
	// Lines per added VM must be the same between every pair of sizes (linear).
	per := func(i, j int) float64 { return float64(lines[j]-lines[i]) / float64(sizes[j]-sizes[i]) }
	if a, b := per(0, 1), per(2, 3); a != b {
		t.Errorf("ruleset growth per VM is not constant: %.2f lines/VM from %d to %d, %.2f from %d to %d", a, sizes[0], sizes[1], b, sizes[2], sizes[3])
	}
}

// TestKernelAcceptsRuleset loads the rendered script into the kernel inside a
// throwaway network namespace and reads it back.
func TestKernelAcceptsRuleset(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "nft")
	for name, cfg := range map[string]*config.Config{"rich": parse(t, richConfig), "500": fleet(t, 500)} {
		rs := Render(cfg, Options{Uplink: "eth0"})
		script := rs.Script() + "list table inet microvm\n"
		out, err := testutil.InNewNetns(t, []byte(script), "nft", "-f", "-")
		if err != nil {
			t.Fatalf("%s: nft rejected the ruleset: %v\n%s", name, err, out)
		}
		if !strings.Contains(string(out), rs.Hash) {
			t.Errorf("%s: loaded table does not carry the hash %s:\n%.2000s", name, rs.Hash, out)
		}
	}
}
