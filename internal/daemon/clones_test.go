package daemon

import (
	"slices"
	"strings"
	"testing"
	"time"

	"microvm.dev/microvm/internal/apitypes"
)

// templateFile is putFile with a template; POOL is its pool's size.
const templateFile = "host: { externalInterface: up0 }\nvms: { f: { index: 1 }, tpl: { index: 2, store: block, template: true, pool: POOL } }\n"

func (lab *putLab) applyPool(t *testing.T, n string) {
	t.Helper()
	if _, err := lab.d.ApplyFile("t.yaml", []byte(strings.Replace(templateFile, "POOL", n, 1))); err != nil {
		t.Fatal(err)
	}
}

// poolMembers are the running clones of tpl's pool.
func (lab *putLab) poolMembers() []string {
	var out []string
	for _, name := range lab.d.poolMembers("tpl") {
		if st, ok := lab.d.Status(name); ok && st.State == apitypes.Running {
			out = append(out, name)
		}
	}
	return out
}

func (lab *putLab) waitPool(t *testing.T, n int, except string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		members := lab.poolMembers()
		switch {
		case n == 0 && len(lab.d.poolMembers("tpl")) == 0: // removed, records too
			return
		case n > 0 && len(members) == n && !slices.Contains(members, except):
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pool has %v, want %d", members, n)
		}
	}
}

// Clones are put together with the lowest free indexes; a name taken, or
// a VM that is no template, is refused with nothing changed. A pool is
// kept full, hands out a ready clone at once and replaces it, and is
// emptied (the taken clone left alone) when its size goes to 0.
func TestClonesAndPools(t *testing.T) {
	lab := newPutLab(t, nil)
	lab.applyPool(t, "0")
	d := lab.d
	res, err := d.Clone("tpl", []string{"a", "b"})
	if err != nil || len(res.VMs) != 2 {
		t.Fatalf("clone a, b: %v %+v", err, res)
	}
	for name, index := range map[string]int{"a": 3, "b": 4} {
		st, _ := d.Status(name)
		if !lab.running(t, name) || st.Spec.Index != index || st.Spec.From != "tpl" {
			t.Errorf("%s: %s, index %d (want %d), from %q", name, st.State, st.Spec.Index, index, st.Spec.From)
		}
	}
	if _, err := d.Clone("tpl", []string{"c", "a"}); err == nil || !strings.Contains(err.Error(), "a: a VM of that name exists") {
		t.Errorf("a clone named as a VM that exists: %v", err)
	}
	if _, ok := d.Status("c"); ok {
		t.Error("a refused clone was put")
	}
	if _, err := d.Clone("f", []string{"x"}); err == nil || !strings.Contains(err.Error(), "f is not a template") {
		t.Errorf("a clone of a plain VM: %v", err)
	}
	if _, err := d.Take("tpl", time.Second); err == nil || !strings.Contains(err.Error(), "keeps no clones ready") {
		t.Errorf("take without a pool: %v", err)
	}

	lab.applyPool(t, "2")
	lab.waitPool(t, 2, "")
	st, err := d.Take("tpl", 5*time.Second)
	if err != nil || !strings.HasPrefix(st.Name, "tpl-") || st.State != apitypes.Running {
		t.Fatalf("take: %v %+v", err, st)
	}
	if slices.Contains(lab.d.poolMembers("tpl"), st.Name) {
		t.Errorf("the taken %s is still the pool's", st.Name)
	}
	lab.waitPool(t, 2, st.Name)
	lab.applyPool(t, "0")
	lab.waitPool(t, 0, "")
	if !lab.running(t, st.Name) || !d.IsPut(st.Name) {
		t.Errorf("the taken clone %s went with the pool", st.Name)
	}
}
