package config

import (
	"reflect"
	"slices"
)

// MaxPool is the most clones a template's pool keeps ready.
const MaxPool = 64

// cloneKeys are the keys a clone may write itself: what a restore can
// change (its name and network, the keys microvm-init lets in, the secret
// files it writes as the clone resumes) and how the daemon keeps it.
// Everything else is its template's.
var cloneKeys = []string{"index", "subnet", "subnet6", "ports", "egress", "sshKeys", "secrets", "healthCheck", "host",
	"autostart", "restart", "stopTimeout", "from"}

// clones checks the templates and their clones and gives every clone its
// template's machine and workload (specs are what the file wrote, by VM
// name): a clone names a template of the file, writes no key a restore
// cannot change, and a template is a VM whose state QEMU can save with
// its memory in a file.
func (v *validator) clones(cfg *Config, specs map[string]VMSpec) {
	for _, vm := range cfg.VMs {
		p := joinPath("vms", vm.Name)
		if vm.Template {
			v.template(p, vm)
		}
		switch n := vm.Supervision.Pool; {
		case n != 0 && !vm.Template:
			v.r.addf(joinPath(p, "pool"), "only a template has a pool of clones (set template: true)")
		case n < 0 || n > MaxPool:
			v.r.addf(joinPath(p, "pool"), "pool %d is outside 0-%d", n, MaxPool)
		}
		if vm.From == "" {
			continue
		}
		t := cfg.byName[vm.From]
		switch {
		case vm.Template:
			v.r.addf(joinPath(p, "from"), "a template cannot be a clone (from: %s)", vm.From)
			continue
		case t == nil:
			v.r.addf(joinPath(p, "from"), "no VM %s in the file to clone (remove the clone first, or keep its template)", vm.From)
			continue
		case !t.Template:
			v.r.addf(joinPath(p, "from"), "%s is not a template (set vms.%s.template: true)", vm.From, vm.From)
			continue
		}
		for _, key := range writtenKeys(specs[vm.Name]) {
			if !slices.Contains(cloneKeys, key) {
				v.r.addf(joinPath(p, key), "a clone takes %s from its template %s (a restore cannot change it): set it there", key, vm.From)
			}
		}
		own := *vm
		*vm = *t
		vm.Name, vm.Index, vm.Net, vm.From, vm.Template = own.Name, own.Index, own.Net, own.From, false
		vm.Ports, vm.SSHKeys, vm.Egress, vm.Host, vm.Supervision = own.Ports, own.SSHKeys, own.Egress, own.Host, own.Supervision
		// The template's secrets are in the clone's memory as saved; those
		// the clone writes itself are written as it resumes (defaults'
		// reach only the template, as the rest of its machine).
		vm.Secrets = nil
		if specs[vm.Name].Secrets != nil {
			vm.Secrets = own.Secrets
		}
		vm.Supervision.MemoryMin = 0 // see template
	}
}

// template checks that vm can be a template: QEMU keeps its memory in a
// file its clones map, and saves it only with a block store; its volumes
// would be shared by every clone.
func (v *validator) template(p string, vm *VM) {
	if vm.Hypervisor != HypervisorQEMU {
		v.r.addf(joinPath(p, "hypervisor"), "a template needs qemu (its clones map its memory file), not %s", vm.Hypervisor)
	}
	if vm.Store != "block" {
		v.r.addf(joinPath(p, "store"), "a template's state is saved, which QEMU can only do with store: block (this one's is %q)", storeName(vm.Store))
	}
	if len(vm.Volumes) > 0 {
		v.r.addf(joinPath(p, "volumes"), "a template cannot have volumes: every clone would write the same disk")
	}
	if vm.Supervision.MemoryMin != 0 {
		v.r.addf(joinPath(p, "memoryMin"), "a template's clones cannot give memory back: QEMU 7.2 would punch the pages out of the template's memory file, under its other clones")
	}
	vm.Supervision.Autostart = false // it is booted to be saved, never run
}

func storeName(s string) string {
	if s == "" {
		return "auto"
	}
	return s
}

// writtenKeys are the YAML keys s sets (by the decoder's own names).
func writtenKeys(s VMSpec) []string {
	var keys []string
	rv := reflect.ValueOf(s)
	for name, i := range yamlFields(rv.Type()) {
		if f := rv.Field(i); (f.Kind() == reflect.Pointer || f.Kind() == reflect.Slice || f.Kind() == reflect.Map) && !f.IsNil() {
			keys = append(keys, name)
		}
	}
	slices.Sort(keys) // problems in a stable order
	return keys
}
