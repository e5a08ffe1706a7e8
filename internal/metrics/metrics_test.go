package metrics

import (
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"microvm.dev/microvm/internal/daemon"
	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/testutil"
	"microvm.dev/microvm/internal/testvmm"
)

// A daemon's metrics carry each running VM's cost to the host as its last
// sample measured it (scripted hypervisors, testvmm: their figures are
// fixed), and the host's memory.
func TestVMsHostMemory(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNetns(t, "mtr")
	ns.IP(t, "link", "add", "up0", "type", "bridge")
	st := t.TempDir()
	d, err := daemon.NewWithLauncher(launch.Env{StateDir: st, RunDir: filepath.Join(st, "run"), NetNS: ns.Path}, &testvmm.Launcher{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.ApplyFile("t.yaml", []byte("host: { externalInterface: up0 }\nvms: { a: { index: 1 } }\n")); err != nil {
		t.Fatal(err)
	}
	d.Sample()
	rec := httptest.NewRecorder()
	New(d, nil).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`microvm_vm_host_memory_bytes{kind="guest",vm="a"} 4.194304e+08`,
		`microvm_vm_host_memory_bytes{kind="hypervisor",vm="a"} 2.097152e+07`,
		`microvm_vm_host_memory_bytes{kind="helpers",vm="a"} 2.097152e+06`,
		`microvm_vm_cpu_seconds_total{vm="a"} 1.5`,
		`microvm_vm_balloon_bytes{vm="a"} 0`,
		`microvm_vm_network_bytes_total{direction="received",vm="a"}`,
		`microvm_host_memory_available_bytes `,
		`microvm_host_memory_short 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", body)
	}
}
