package config

import (
	"strings"
	"testing"
)

// TestKernelParams: kernelParams merge from the defaults (a VM's own list
// replaces theirs), enter the spec hash, and microvm's own parameters are
// refused naming the VM, the item and the reason.
func TestKernelParams(t *testing.T) {
	cfg := mustParse(t, `defaults: { kernelParams: [apparmor=0, mitigations=off] }
vms:
  a: { index: 1 }
  b: { index: 2, kernelParams: [systemd.unified_cgroup_hierarchy=1, nosmt] }
`, Options{})
	if got := strings.Join(cfg.VM("a").KernelParams, " "); got != "apparmor=0 mitigations=off" {
		t.Errorf("a inherits the defaults' params: %q", got)
	}
	if got := strings.Join(cfg.VM("b").KernelParams, " "); got != "systemd.unified_cgroup_hierarchy=1 nosmt" {
		t.Errorf("b's own list replaces the defaults': %q", got)
	}
	plain := mustParse(t, "vms: { a: { index: 1 } }", Options{}).VM("a")
	if plain.SpecHash() == cfg.VM("a").SpecHash() {
		t.Error("kernelParams are not in the spec hash: a change would not restart the VM")
	}

	for _, c := range []struct{ param, path, want string }{
		{"console=tty0", "vms.a.kernelParams[0]", "microvm reads the boot from the serial console"},
		{"microvm.name=x", "vms.a.kernelParams[0]", "microvm.* parameters are set by microvm"},
		{"panic=10", "vms.a.kernelParams[0]", "powers the VM off on a panic"},
		{"reboot=k", "vms.a.kernelParams[0]", "how the guest reboots"},
		{"tsc_early_khz=1000", "vms.a.kernelParams[0]", "TSC frequency"},
		{"root=/dev/vda", "vms.a.kernelParams[0]", "root is assembled by microvm-init"},
		{"init=/bin/sh", "vms.a.kernelParams[0]", "microvm-init is the first process"},
		{"rdinit=/bin/sh", "vms.a.kernelParams[0]", "microvm-init is the first process"},
		{"--", "vms.a.kernelParams[0]", "arguments after --"},
		{"a b", "vms.a.kernelParams[0]", "holds a space"},
		{`x="y z"`, "vms.a.kernelParams[0]", "holds a space, a quote"},
		{"", "vms.a.kernelParams[0]", "is empty"},
	} {
		_, err := Parse("t.yaml", []byte("vms: { a: { index: 1, kernelParams: ['"+strings.ReplaceAll(c.param, "'", "''")+"'] } }"), Options{})
		if err == nil || !strings.Contains(err.Error(), c.path) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("kernelParams [%q]: %v; want an error at %s saying %q", c.param, err, c.path, c.want)
		}
	}
	_, err := Parse("t.yaml", []byte("defaults: { kernelParams: [quiet, console=hvc0] }\nvms: { a: { index: 1 } }"), Options{})
	if err == nil || !strings.Contains(err.Error(), "defaults.kernelParams[1]") {
		t.Errorf("an owned parameter in the defaults: %v", err)
	}
	long := "x=" + strings.Repeat("y", MaxKernelParams)
	if _, err := Parse("t.yaml", []byte("vms: { a: { index: 1, kernelParams: ["+long+"] } }"), Options{}); err == nil || !strings.Contains(err.Error(), "more than 1024") {
		t.Errorf("too long a command line: %v", err)
	}
}

// TestUserForms: the file takes every form docker run --user takes, and
// refuses what is neither a name nor a number on either side of the colon.
func TestUserForms(t *testing.T) {
	for _, u := range []string{"root", "4242", "4242:4243", "www-data:www-data", "4242:www-data", "app:4243", "_svc"} {
		cfg, err := Parse("t.yaml", []byte("vms: { a: { index: 1, user: \""+u+"\" } }"), Options{})
		if err != nil {
			t.Errorf("user %q refused: %v", u, err)
			continue
		}
		if got := cfg.VM("a").User; got != u {
			t.Errorf("user %q became %q", u, got)
		}
	}
	for _, c := range []struct{ user, want string }{
		{"Bad Name", "neither a user name nor a uid"},
		{"4242:", "neither a group name nor a gid"},
		{":4243", "neither a user name nor a uid"},
		{"a:b:c", "neither a group name nor a gid"},
		{"-x", "neither a user name nor a uid"},
	} {
		_, err := Parse("t.yaml", []byte("vms: { a: { index: 1, user: \""+c.user+"\" } }"), Options{})
		if err == nil || !strings.Contains(err.Error(), "vms.a.user") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("user %q: %v; want vms.a.user saying %q", c.user, err, c.want)
		}
	}
}
