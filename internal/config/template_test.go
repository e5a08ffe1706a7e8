package config

import (
	"strings"
	"testing"
)

func TestCloneTakesTheTemplatesMachine(t *testing.T) {
	const src = `defaults: { memory: 256M }
vms:
  tpl: { index: 1, store: block, template: true, memory: 384M, command: [sleep, "100"], env: { A: b } }
  c1: { index: 2, from: tpl, sshKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJr/NPIh1zR4k/yjj3cbRAl0CFTO2Kl/Vk6cdUr7sbyV x"], autostart: false }
`
	cfg := mustParse(t, src, Options{})
	tpl, c1 := cfg.VM("tpl"), cfg.VM("c1")
	if tpl.Supervision.Autostart {
		t.Error("a template is started by the daemon")
	}
	if c1.Memory != 384*MiB || c1.Store != "block" || c1.Command[0] != "sleep" || c1.Env["A"] != "b" || c1.Template || c1.From != "tpl" {
		t.Errorf("c1 is not the template's machine: %+v", c1)
	}
	if c1.Net.Address.String() != "10.2.0.2" || c1.Net.MAC == tpl.Net.MAC || len(c1.SSHKeys) != 1 || c1.Supervision.Autostart {
		t.Errorf("c1 lost its own keys: %+v", c1)
	}
	// A change of the template restarts no clone.
	hash := c1.SpecHash()
	cfg2 := mustParse(t, strings.Replace(src, "A: b", "A: c", 1), Options{})
	if cfg2.VM("c1").SpecHash() != hash {
		t.Error("the template's change changed its clone's spec hash")
	}
}

func TestBadTemplatesAndClones(t *testing.T) {
	for _, tc := range []struct{ name, vms, want string }{
		{"clone changes the image", `tpl: { index: 1, store: block, template: true }
  c: { index: 2, from: tpl, image: other }`, "vms.c.image: a clone takes image from its template tpl (a restore cannot change it)"},
		{"clone changes memory and env", `tpl: { index: 1, store: block, template: true }
  c: { index: 2, from: tpl, memory: 1G, env: { A: b } }`, "vms.c.memory: a clone takes memory"},
		{"template without a savable store", `tpl: { index: 1, template: true }`, "vms.tpl.store: a template's state is saved, which QEMU can only do with store: block"},
		{"template on another hypervisor", `tpl: { index: 1, store: block, template: true, hypervisor: firecracker }`, "vms.tpl.hypervisor: a template needs qemu"},
		{"template with volumes", `tpl: { index: 1, store: block, template: true, volumes: [{ name: d, mountPoint: /d, size: 8M }] }`, "vms.tpl.volumes: a template cannot have volumes"},
		{"clone of a missing VM", `c: { index: 2, from: nothere }`, "vms.c.from: no VM nothere in the file to clone"},
		{"clone of a plain VM", `a: { index: 1 }
  c: { index: 2, from: a }`, "vms.c.from: a is not a template (set vms.a.template: true)"},
		{"pool on a plain VM", `a: { index: 1, pool: 2 }`, "vms.a.pool: only a template has a pool"},
		{"pool too large", `tpl: { index: 1, store: block, template: true, pool: 65 }`, "vms.tpl.pool: pool 65 is outside 0-64"},
		{"template that is a clone", `tpl: { index: 1, store: block, template: true }
  t2: { index: 2, store: block, template: true, from: tpl }`, "vms.t2.from: a template cannot be a clone"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("infra.yaml", []byte("vms:\n  "+tc.vms+"\n"), Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := Parse("infra.yaml", []byte("defaults: { template: true }\nvms: {}\n"), Options{}); err == nil || !strings.Contains(err.Error(), "template, from and pool are per VM") {
		t.Errorf("template in the defaults: %v", err)
	}
}

// TestCloneSecrets: a clone's own secrets are its (written as it resumes);
// the template's and the defaults' are the template's, in its memory.
func TestCloneSecrets(t *testing.T) {
	src := "defaults: { secrets: [{path: /run/secrets/fleet, age: " + testSecret + "}] }\nvms:\n" +
		"  tpl: { index: 1, store: block, template: true, secrets: [{path: /run/secrets/tpl, age: " + testSecret + "}] }\n" +
		"  c1: { index: 2, from: tpl, secrets: [{path: /run/secrets/job, age: " + testSecret + "}] }\n" +
		"  c2: { index: 3, from: tpl }\n"
	cfg := mustParse(t, src, Options{})
	if s := cfg.VM("c1").Secrets; len(s) != 1 || s[0].Path != "/run/secrets/job" {
		t.Errorf("c1's secrets: %+v, want its own only", s)
	}
	if s := cfg.VM("c2").Secrets; len(s) != 0 {
		t.Errorf("c2 wrote no secrets but has %+v", s)
	}
	if s := cfg.VM("tpl").Secrets; len(s) != 1 || s[0].Path != "/run/secrets/tpl" {
		t.Errorf("the template's secrets: %+v", s)
	}
	// A clone's secret changes its spec (it restarts with the new one).
	hash := cfg.VM("c1").SpecHash()
	cfg2 := mustParse(t, strings.Replace(src, "/run/secrets/job", "/run/secrets/job2", 1), Options{})
	if cfg2.VM("c1").SpecHash() == hash {
		t.Error("a change of a clone's secret left its spec hash as it was")
	}
}
