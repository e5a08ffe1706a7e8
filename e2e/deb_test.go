package e2e

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"microvm.dev/microvm/internal/testutil"
)

// TestDebianPackage builds the packages with nfpm for amd64 and arm64 from
// this one machine, checks each (dpkg-deb --info's architecture, the ELF
// machine of both binaries), installs this machine's with dpkg, runs the
// installed `microvm doctor`, and removes it: a volume under
// /var/lib/microvm stays. The machine is left as it was (package purged,
// the test's volume and a group it created removed).
func TestDebianPackage(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "dpkg")
	if out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", "microvm").CombinedOutput(); err == nil && strings.Contains(string(out), "installed") {
		t.Skip("a microvm package is already installed on this machine; not touching it")
	}
	out := t.TempDir()
	build := exec.Command("bash", "../scripts/build-deb.sh", out, "0.0.0~test")
	b, err := build.CombinedOutput()
	if err != nil {
		t.Fatalf("build-deb: %v\n%s", err, b)
	}
	machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	for arch, machine := range machines {
		deb := filepath.Join(out, "microvm_0.0.0~test_"+arch+".deb")
		info, err := exec.Command("dpkg-deb", "--field", deb, "Architecture").CombinedOutput()
		if err != nil || strings.TrimSpace(string(info)) != arch {
			t.Errorf("%s: architecture %q (%v)", deb, info, err)
			continue
		}
		dir := t.TempDir()
		if out, err := exec.Command("dpkg-deb", "-x", deb, dir).CombinedOutput(); err != nil {
			t.Fatalf("dpkg-deb -x %s: %v\n%s", deb, err, out)
		}
		for _, bin := range []string{"usr/bin/microvm", "usr/libexec/microvm/microvm-init"} {
			f, err := elf.Open(filepath.Join(dir, bin))
			if err != nil {
				t.Errorf("%s in %s: %v", bin, deb, err)
				continue
			}
			if f.Machine != machine {
				t.Errorf("%s in %s is for %s, want %s", bin, deb, f.Machine, machine)
			}
			f.Close()
		}
	}
	native, _ := exec.Command("dpkg", "--print-architecture").Output()
	debs := []string{filepath.Join(out, "microvm_0.0.0~test_"+strings.TrimSpace(string(native))+".deb")}
	hadGroup := exec.Command("getent", "group", "microvm").Run() == nil
	volDir := "/var/lib/microvm/vms/debtest"
	vol := filepath.Join(volDir, "data.img")
	t.Cleanup(func() {
		exec.Command("dpkg", "--purge", "microvm").Run()
		os.RemoveAll(volDir)
		if !hadGroup {
			exec.Command("groupdel", "microvm").Run()
		}
	})
	if out, err := exec.Command("dpkg", "-i", debs[0]).CombinedOutput(); err != nil {
		t.Fatalf("dpkg -i: %v\n%s", err, out)
	}
	if out, err := exec.Command("/usr/bin/microvm", "version").CombinedOutput(); err != nil || !strings.Contains(string(out), "0.0.0~test") {
		t.Errorf("installed microvm version: %v %s", err, out)
	}
	if out, err := exec.Command("/usr/bin/microvm-kubelet", "--version").CombinedOutput(); err != nil || !strings.Contains(string(out), "0.0.0~test") {
		t.Errorf("installed microvm-kubelet version: %v %s", err, out)
	}
	if out, err := exec.Command("/usr/bin/microvm", "doctor").CombinedOutput(); err != nil {
		t.Errorf("microvm doctor after install: %v\n%s", err, out)
	}
	if out, err := exec.Command("/usr/bin/microvm", "validate", "-f", "/etc/microvm/infra.yaml", "--offline").CombinedOutput(); err != nil {
		t.Errorf("the packaged config: %v\n%s", err, out)
	}
	if err := exec.Command("getent", "group", "microvm").Run(); err != nil {
		t.Error("the package did not create the microvm group")
	}
	if err := os.MkdirAll(volDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vol, []byte("precious data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("dpkg", "-r", "microvm").CombinedOutput(); err != nil {
		t.Fatalf("dpkg -r: %v\n%s", err, out)
	}
	if _, err := os.Stat("/usr/bin/microvm"); err == nil {
		t.Error("/usr/bin/microvm is still there after removal")
	}
	if b, err := os.ReadFile(vol); err != nil || string(b) != "precious data" {
		t.Errorf("the volume after removal: %q %v", b, err)
	}
}
