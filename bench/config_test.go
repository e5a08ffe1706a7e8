package bench

import (
	"testing"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/firewall"
	"microvm.dev/microvm/internal/plan"
)

func TestFleetYAMLIsValid(t *testing.T) {
	for _, n := range []int{1, 10, 1000} {
		if _, err := config.Parse("fleet.yaml", FleetYAML(n), config.Options{}); err != nil {
			t.Fatalf("%d VMs: %v", n, err)
		}
	}
}

// BenchmarkValidate1000 decodes and validates a 1,000-VM file.
func BenchmarkValidate1000(b *testing.B) {
	data := FleetYAML(1000)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := config.Parse("fleet.yaml", data, config.Options{HostCPUs: 64}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPlan1000 plans a 1,000-VM file against a state where every VM
// runs and one in ten has a changed spec.
func BenchmarkPlan1000(b *testing.B) {
	cfg, err := config.Parse("fleet.yaml", FleetYAML(1000), config.Options{})
	if err != nil {
		b.Fatal(err)
	}
	var observed []plan.Observed
	for i, vm := range cfg.VMs {
		spec := *vm
		if i%10 == 0 {
			spec.Memory *= 2
		}
		observed = append(observed, plan.Observed{Name: vm.Name, Spec: &spec, Running: true})
	}
	for b.Loop() {
		p := plan.Compute(cfg, observed, plan.Host{})
		if p.Counts()[plan.Update] != 100 {
			b.Fatal("wrong plan")
		}
	}
}

// BenchmarkValidatePlan1000 is the whole of `microvm plan` minus file and
// state I/O: parse, validate, plan from empty state.
func BenchmarkValidatePlan1000(b *testing.B) {
	data := FleetYAML(1000)
	for b.Loop() {
		cfg, err := config.Parse("fleet.yaml", data, config.Options{})
		if err != nil {
			b.Fatal(err)
		}
		plan.Compute(cfg, nil, plan.Host{})
	}
}

// BenchmarkRenderNftables1000 renders the ruleset of a 1,000-VM file.
func BenchmarkRenderNftables1000(b *testing.B) {
	cfg, err := config.Parse("fleet.yaml", FleetYAML(1000), config.Options{})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		firewall.Render(cfg, firewall.Options{Uplink: "eth0"})
	}
}
