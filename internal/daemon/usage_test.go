package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/hostmem"
	"microvm.dev/microvm/internal/ksm"
	"microvm.dev/microvm/internal/testvmm"
)

// The host's memory is read from a meminfo of the test's, and KSM set in
// a sysfs directory of the test's (the machine's own is not touched); the
// VMs are scripted (testvmm), each costing testvmm's figures.
func usageLab(t *testing.T) (*putLab, func(avail string)) {
	lab := newPutLab(t, nil)
	proc := t.TempDir()
	lab.d.proc = hostmem.Proc(proc)
	setAvail := func(avail string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(proc, "meminfo"), []byte("MemTotal:       24000000 kB\nMemAvailable:   "+avail+" kB\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	setAvail("20000000")
	return lab, setAvail
}

// Each sample measures every running VM: its status shows the last one,
// its samples the hour's. Under host.reclaim, a host short of memory
// balloons each VM with a memoryMin down to it (and no other), keeps it
// there until memory is back above the release threshold, then gives it
// back; a file without host.reclaim gives it back too.
func TestReclaimUnderPressure(t *testing.T) {
	lab, setAvail := usageLab(t)
	d := lab.d
	file := "host: { externalInterface: up0, reclaim: { below: 1G, above: 2G } }\nvms: { a: { index: 2, memory: 512M, memoryMin: 256M }, b: { index: 3, memory: 512M } }\n"
	res, err := d.ApplyFile("t.yaml", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Warnings) != 0 {
		t.Errorf("warnings %q", res.Warnings)
	}
	balloons := func() string {
		var out []string
		for _, vm := range []string{"a", "b"} {
			r, _ := d.sup.Process(vm)
			taken, err := r.(meter).Balloon()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprintf("%s=%s", vm, config.Size(taken)))
		}
		return strings.Join(out, " ")
	}
	step := func(avail, wantBalloons string, wantShort bool) {
		t.Helper()
		setAvail(avail)
		d.Sample()
		if got := balloons(); got != wantBalloons {
			t.Errorf("available %s kB: balloons %s, want %s", avail, got, wantBalloons)
		}
		if short, _, _ := d.Short(); short != wantShort {
			t.Errorf("available %s kB: short %v, want %v", avail, short, wantShort)
		}
	}
	step("4000000", "a=0 b=0", false)
	st, _ := d.Status("a")
	if m := st.HostMemory; m == nil || m.Guest != testvmm.GuestBytes || m.Total != testvmm.GuestBytes+testvmm.HypervisorBytes+testvmm.HelperBytes {
		t.Fatalf("a's host memory: %+v", st.HostMemory)
	}
	step("500000", "a=256M b=0", true)
	step("1500000", "a=256M b=0", true) // between the thresholds: stays
	d.Sample()
	if st, _ := d.Status("a"); st.HostMemory.Balloon != 256<<20 || st.HostMemory.Guest != testvmm.GuestBytes-256<<20 {
		t.Errorf("a's host memory while ballooned: %+v", st.HostMemory)
	}
	step("2500000", "a=0 b=0", false)
	step("500000", "a=256M b=0", true)
	// Without host.reclaim the memory goes back, whatever the host has.
	res, err = d.ApplyFile("t.yaml", []byte(strings.Replace(file, "reclaim: { below: 1G, above: 2G } ", "", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(res.Warnings, "vms.a.memoryMin has no effect without host.reclaim") {
		t.Errorf("warnings %q", res.Warnings)
	}
	step("500000", "a=0 b=0", false)
	if n := len(d.Samples("a")); n != 7 {
		t.Errorf("%d samples of a, want 7", n)
	}
	if all := d.AllSamples(); len(all) != 2 || len(all["a"]) != 7 || len(all["b"]) != 7 {
		t.Errorf("all samples: %d VMs, a %d, b %d (f was removed with the first file)", len(all), len(all["a"]), len(all["b"]))
	}
}

// host.ksm turns the host's KSM on with its settings, and off when
// enabled is false; unset, it is left as it is.
func TestKSMSettings(t *testing.T) {
	lab, _ := usageLab(t)
	d := lab.d
	sys := t.TempDir()
	for name, v := range map[string]string{"run": "0", "pages_to_scan": "100", "sleep_millisecs": "20", "pages_shared": "0", "pages_sharing": "0", "general_profit": "0"} {
		os.WriteFile(filepath.Join(sys, name), []byte(v+"\n"), 0o644)
	}
	d.ksm = ksm.Dir(sys)
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(sys, name))
		return strings.TrimSpace(string(b))
	}
	apply := func(host string) {
		t.Helper()
		if _, err := d.ApplyFile("t.yaml", []byte("host: { externalInterface: up0"+host+" }\nvms: { f: { index: 1 } }\n")); err != nil {
			t.Fatal(err)
		}
	}
	apply(", ksm: { enabled: true, pagesToScan: 500, sleep: 50ms }")
	if read("run") != "1" || read("pages_to_scan") != "500" || read("sleep_millisecs") != "50" {
		t.Errorf("ksm: run %s, pages_to_scan %s, sleep_millisecs %s", read("run"), read("pages_to_scan"), read("sleep_millisecs"))
	}
	apply("")
	if read("run") != "1" {
		t.Error("a file without host.ksm changed the host's KSM")
	}
	apply(", ksm: { enabled: false }")
	if read("run") != "0" {
		t.Error("enabled: false left KSM running")
	}
	st, err := d.ksm.Stats()
	if err != nil || st.Running {
		t.Errorf("stats %+v %v", st, err)
	}
}
