package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/state"
)

const reference = "../../examples/reference/infra.yaml"

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "infra.yaml")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestValidateReference(t *testing.T) {
	code, out, errOut := runCLI(t, "validate", "-f", reference, "--offline")
	if code != 0 || !strings.Contains(out, "valid, 5 VM(s)") {
		t.Fatalf("code %d, out %q, err %q", code, out, errOut)
	}
}

func TestValidateProblemsExit1(t *testing.T) {
	f := writeFile(t, "vms:\n  a: { index: 1, memory: 1M }\n  b: { index: 2, vcpu: two }\n")
	code, out, _ := runCLI(t, "validate", "-f", f, "--offline")
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], f+":2: vms.a.memory: ") || !strings.HasPrefix(lines[1], f+":3: vms.b.vcpu: ") {
		t.Errorf("want one line per problem as file:line: path: message, got:\n%s", out)
	}
	code, out, _ = runCLI(t, "validate", "-f", f, "--offline", "-o", "json")
	var res validateResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 1 || res.Valid || len(res.Problems) != 2 || res.Problems[0].Path != "vms.a.memory" {
		t.Fatalf("json: code %d, %+v, %v\n%s", code, res, err, out)
	}
}

func TestValidateMissingFile(t *testing.T) {
	code, _, errOut := runCLI(t, "validate", "-f", filepath.Join(t.TempDir(), "nope.yaml"))
	if code != 1 || !strings.Contains(errOut, "no such file") {
		t.Fatalf("code %d, err %q", code, errOut)
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	for _, args := range [][]string{
		{"bogus"},
		{"validate", "--nope"},
		{"validate", "extra-arg"},
		{"render"},
		{"render", "runner"},
		{"render", "firewall"},
		{"plan", "-o", "yaml"},
	} {
		if code, _, errOut := runCLI(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2 (stderr %q)", args, code, errOut)
		}
	}
}

func TestHelpOnEveryVerb(t *testing.T) {
	for _, verb := range []string{"validate", "plan", "render", "net", "net apply", "net show", "net teardown", "run", "daemon", "apply", "list", "status", "start", "stop", "restart", "logs", "rm", "version", "completion"} {
		code, out, _ := runCLI(t, append(strings.Fields(verb), "--help")...)
		if code != 0 || !strings.Contains(out, "Usage:") {
			t.Errorf("%s --help: exit %d\n%s", verb, code, out)
		}
		if verb != "completion" && verb != "net" && !strings.Contains(out, "Examples:") {
			t.Errorf("%s --help has no examples", verb)
		}
	}
	code, out, _ := runCLI(t, "completion", "bash")
	if code != 0 || !strings.Contains(out, "bash completion") {
		t.Errorf("completion bash: exit %d", code)
	}
}

func TestPlanFromNothingCreatesFive(t *testing.T) {
	stateDir := t.TempDir()
	code, out, errOut := runCLI(t, "plan", "-f", reference, "--offline", "--state-dir", stateDir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "5 to create, 0 to update, 0 to remove, 0 unchanged") {
		t.Errorf("summary missing:\n%s", out)
	}
	for i := 1; i <= 5; i++ {
		n := string(rune('0' + i))
		for _, want := range []string{"10." + n + ".0.0/24", "br-vm" + n, "vm-vm" + n, "02:00:00:00:00:0" + n} {
			if !strings.Contains(out, want) {
				t.Errorf("plan lacks %q", want)
			}
		}
	}
}

func TestPlanAgainstState(t *testing.T) {
	stateDir := t.TempDir()
	cfg, err := config.Load(reference, config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := state.Dir{Root: stateDir}
	for _, vm := range cfg.VMs {
		if err := d.WriteRunRecord(state.RunRecord{Name: vm.Name, Spec: *vm}); err != nil {
			t.Fatal(err)
		}
	}
	code, out, _ := runCLI(t, "plan", "-f", reference, "--offline", "--state-dir", stateDir)
	if code != 0 || !strings.Contains(out, "Nothing to do.") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	ref, _ := os.ReadFile(reference)
	changed := strings.Replace(string(ref), "vm2: { index: 2 }", "vm2: { index: 2, memory: 2G }", 1)
	code, out, _ = runCLI(t, "plan", "-f", writeFile(t, changed), "--offline", "--state-dir", stateDir, "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	var p struct {
		VMs []struct {
			Name    string `json:"name"`
			Action  string `json:"action"`
			Changes []struct{ Field, From, To string }
		} `json:"vms"`
	}
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatal(err)
	}
	if p.VMs[0].Name != "vm2" || p.VMs[0].Action != "update" || p.VMs[0].Changes[0].To != "2G" {
		t.Errorf("want vm2 updated first, got %+v", p.VMs)
	}
	for _, v := range p.VMs[1:] {
		if v.Action != "unchanged" {
			t.Errorf("%s: %s, want unchanged", v.Name, v.Action)
		}
	}
}

func TestPlanInvalidFile(t *testing.T) {
	f := writeFile(t, "vms: { a: { index: 1, bogus: 1 } }")
	code, out, errOut := runCLI(t, "plan", "-f", f, "--offline", "--state-dir", t.TempDir())
	if code != 1 || out != "" || !strings.Contains(errOut, `unknown key "bogus"`) {
		t.Fatalf("exit %d, out %q, err %q", code, out, errOut)
	}
}

func TestRenderNftables(t *testing.T) {
	f := writeFile(t, "host: { externalInterface: lo }\nvms: { a: { index: 1 } }")
	code, out, errOut := runCLI(t, "render", "nftables", "-f", f)
	if code != 0 || !strings.HasPrefix(out, "table inet microvm\ndelete table inet microvm\n") || !strings.Contains(out, `oifname "lo" ip saddr @vm_subnets masquerade`) {
		t.Fatalf("exit %d, err %q:\n%s", code, errOut, out)
	}
	f = writeFile(t, "host: { externalInterface: nosuchif0 }\nvms: { a: { index: 1 } }")
	if code, _, errOut := runCLI(t, "render", "nftables", "-f", f); code != 1 || !strings.Contains(errOut, `host.externalInterface "nosuchif0"`) {
		t.Fatalf("missing uplink: exit %d, err %q", code, errOut)
	}
}

func TestRenderRunner(t *testing.T) {
	// A stand-in kernel, so the test does not depend on a fetched one.
	kdir := t.TempDir()
	os.WriteFile(filepath.Join(kdir, "vmlinuz"), []byte("kernel"), 0o644)
	os.WriteFile(filepath.Join(kdir, "modules.dep"), nil, 0o644)
	ref, _ := os.ReadFile(reference)
	src := strings.Replace(string(ref), "kernel: host", "kernel: { path: "+kdir+"/vmlinuz, modules: "+kdir+" }", 1)
	f := writeFile(t, src)
	code, out, errOut := runCLI(t, "render", "runner", "vm1", "-f", f, "--state-dir", "/srv/mv", "--arch", "x86_64")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"qemu-system-x86_64", "-kernel " + kdir + "/vmlinuz", "-initrd /srv/mv/vms/vm1/initramfs.cpio", "ifname=vm-vm1", "mac=02:00:00:00:00:01", "/srv/mv/vms/vm1/data.img", "serial=data", "-smp 2", "-m 1024M"} {
		if !strings.Contains(out, want) {
			t.Errorf("runner lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = runCLI(t, "render", "runner", "vm1", "-f", f, "--arch", "aarch64", "-o", "json")
	if code != 0 || !strings.Contains(out, `"qemu-system-aarch64"`) || !strings.Contains(out, "console=ttyAMA0") {
		t.Errorf("aarch64 runner: exit %d\n%s", code, out)
	}
	if code, _, errOut := runCLI(t, "render", "runner", "ghost", "-f", f); code != 1 || !strings.Contains(errOut, `no VM named "ghost"`) {
		t.Errorf("unknown VM: exit %d, %q", code, errOut)
	}
}

func TestClientVerbsWithoutDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	f := writeFile(t, "vms: {}")
	for _, args := range [][]string{{"list"}, {"status", "a"}, {"start", "a"}, {"stop", "a"}, {"restart", "a"}, {"logs", "a"}, {"rm", "a"}, {"apply", "-f", f},
		{"deploy", "status"}, {"deploy", "history"}, {"deploy", "trigger"}, {"deploy", "rollback"}, {"deploy", "suspend"}, {"deploy", "resume"}} {
		code, _, errOut := runCLI(t, append(args, "--socket", sock)...)
		if code != 1 || !strings.Contains(errOut, "no daemon is listening on "+sock) {
			t.Errorf("%v: exit %d, %q", args, code, errOut)
		}
	}
}

// Firecracker cannot be installed here: verify must say so, naming the VM.
func TestVerifyReportsAbsentHypervisor(t *testing.T) {
	f := writeFile(t, "vms: { fc: { index: 1, hypervisor: firecracker } }")
	code, out, _ := runCLI(t, "verify", "-f", f, "--state-dir", t.TempDir())
	if code != 1 || !strings.Contains(out, "FAIL  hypervisor firecracker") || !strings.Contains(out, "needed by VM fc") {
		t.Errorf("exit %d:\n%s", code, out)
	}
	code, out, _ = runCLI(t, "verify", "-f", f, "--state-dir", t.TempDir(), "-o", "json")
	var res struct {
		Results []struct{ Name, Status, Evidence string }
		Failed  int
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 1 || res.Failed == 0 || len(res.Results) == 0 {
		t.Errorf("json: exit %d, %v:\n%s", code, err, out)
	}
}

func TestRenderRunnerFirecracker(t *testing.T) {
	kdir := t.TempDir()
	os.WriteFile(filepath.Join(kdir, "vmlinux"), []byte("\x7fELF"), 0o644)
	os.WriteFile(filepath.Join(kdir, "modules.dep"), nil, 0o644)
	st := t.TempDir()
	os.MkdirAll(filepath.Join(st, "store", "base", "etc"), 0o755)
	f := writeFile(t, "vms: { fc: { index: 1, hypervisor: firecracker, kernel: { path: "+kdir+"/vmlinux, modules: "+kdir+" } } }")
	code, out, errOut := runCLI(t, "render", "runner", "fc", "-f", f, "--state-dir", st, "--arch", "x86_64")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"# " + st + "/vms/fc/firecracker.json:", `"kernel_image_path": "` + kdir + `/vmlinux"`, `"is_read_only": true`, "firecracker --id fc --api-sock"} {
		if !strings.Contains(out, want) {
			t.Errorf("runner lacks %q:\n%s", want, out)
		}
	}
	code, _, errOut = runCLI(t, "render", "runner", "fc", "-f", f, "--state-dir", st, "--share", "virtiofs")
	if code != 1 || !strings.Contains(errOut, "firecracker cannot share the store over virtiofs") {
		t.Errorf("virtiofs share: exit %d, %s", code, errOut)
	}
}

func TestImageVerbs(t *testing.T) {
	st := t.TempDir()
	tree := filepath.Join(t.TempDir(), "rootfs")
	os.MkdirAll(filepath.Join(tree, "etc"), 0o755)
	os.WriteFile(filepath.Join(tree, "etc", "hostname"), []byte("x\n"), 0o644)
	code, out, errOut := runCLI(t, "image", "import", "web", tree, "--state-dir", st)
	if code != 0 || !strings.HasPrefix(out, "web: ") {
		t.Fatalf("import: exit %d %q %q", code, out, errOut)
	}
	if !strings.Contains(errOut, "layer 1/1 unpacked") {
		t.Errorf("no plain progress lines off a terminal: %q", errOut)
	}
	runCLI(t, "image", "import", "web2", tree, "--state-dir", st)
	code, out, _ = runCLI(t, "image", "list", "--state-dir", st, "-o", "json")
	var rows []struct {
		Name, ID string
		VMs      []string
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil || code != 0 || len(rows) != 2 || rows[0].ID != rows[1].ID {
		t.Fatalf("list: exit %d %v\n%s", code, err, out)
	}
	// A VM using web keeps it from rm and gc.
	rec := state.RunRecord{Name: "vm1", Spec: config.VM{Name: "vm1", Image: "web"}}
	if err := (state.Dir{Root: st}).WriteRunRecord(rec); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runCLI(t, "image", "rm", "web", "--state-dir", st); code != 1 || !strings.Contains(errOut, "used by vm1") {
		t.Errorf("rm of an image in use: exit %d %q", code, errOut)
	}
	code, out, _ = runCLI(t, "image", "gc", "--state-dir", st)
	if code != 0 || !strings.Contains(out, "removed 1 name(s), 0 tree(s)") || !strings.Contains(out, "web2") {
		t.Errorf("gc: exit %d %q", code, out)
	}
	code, out, _ = runCLI(t, "image", "list", "--state-dir", st)
	if code != 0 || !strings.Contains(out, "web ") || !strings.Contains(out, "vm1") || strings.Contains(out, "web2") {
		t.Errorf("list after gc: %q", out)
	}
	if code, _, errOut := runCLI(t, "image", "import", "x", "/nonexistent", "--state-dir", st); code != 1 || !strings.Contains(errOut, "/nonexistent") {
		t.Errorf("bad source: exit %d %q", code, errOut)
	}
	if code, _, _ := runCLI(t, "image", "--state-dir", st); code != 2 {
		t.Errorf("image without subcommand: exit %d", code)
	}
}

func TestDeployUsage(t *testing.T) {
	if code, _, _ := runCLI(t, "deploy"); code != 2 {
		t.Errorf("deploy without a subcommand: exit %d", code)
	}
	if code, _, errOut := runCLI(t, "deploy", "rollback", "two"); code != 2 || !strings.Contains(errOut, "not a generation number") {
		t.Errorf("rollback two: exit %d %q", code, errOut)
	}
	if code, _, errOut := runCLI(t, "daemon", "--config", "x.yaml", "--git-url", "/tmp/r.git", "--socket", filepath.Join(t.TempDir(), "s")); code != 2 || !strings.Contains(errOut, "exclude each other") {
		t.Errorf("daemon with both sources: exit %d %q", code, errOut)
	}
}

func TestDoctorJSON(t *testing.T) {
	code, out, _ := runCLI(t, "doctor", "-o", "json")
	var res struct {
		Results []struct{ Name, Status, Evidence string }
		Failed  int
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Results) < 9 || (code != 0) != (res.Failed > 0) {
		t.Errorf("doctor: exit %d, %v\n%s", code, err, out)
	}
}
