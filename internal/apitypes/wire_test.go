package apitypes

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/testutil"
)

// Each wire type's JSON, with every field set (filled by reflection, so a
// field added later is in it too) and with none, is pinned by a golden
// file: renaming a Go field, or its tag, changes a file under testdata/
// and fails here until the change is meant (-update).
func TestWireJSON(t *testing.T) {
	for name, v := range map[string]any{
		"vmstatus":         VMStatus{},
		"save_response":    SaveResponse{},
		"remove_response":  RemoveResponse{},
		"restore_response": RestoreResponse{},
		"error_response":   ErrorResponse{},
		"apply_result":     ApplyResult{},
		"apply_failure":    ApplyFailure{},
		"put_result":       PutResult{},
		"put_response":     PutResponse{},
		"clone_request":    CloneRequest{},
		"clone_result":     CloneResult{},
		"stop_result":      StopResult{},
		"snapshot":         Snapshot{},
		"host_info":        HostInfo{},
		"check_result":     CheckResult{},
		"deploy_status":    DeployStatus{},
		"generation":       Generation{},
		"trigger_response": TriggerResponse{},
		"suspend_response": SuspendResponse{},
		"vm_sample":        VMSample{},
		"ksm_stats":        KSMStats{},
		"recipients":       Recipients{},
		"backup":           Backup{},
		"move_result":      MoveResult{},
		"peer_hello":       PeerHello{},
		"peer_commit":      PeerCommit{},
		"peer_cached":      PeerCached{},
		"peer_vm":          PeerVM{},
		"drain_result":     DrainResult{},
	} {
		t.Run(name, func(t *testing.T) {
			full := reflect.New(reflect.TypeOf(v))
			fill(full.Elem(), spec(t), 0)
			out := map[string]any{"zero": v, "full": full.Interface()}
			b, err := json.MarshalIndent(out, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			testutil.Golden(t, name+".json", append(b, '\n'))
			// What was written reads back to the same JSON.
			back := reflect.New(reflect.TypeOf(v))
			fb, _ := json.Marshal(full.Interface())
			if err := json.Unmarshal(fb, back.Interface()); err != nil {
				t.Fatalf("decode its own JSON: %v", err)
			}
			if bb, _ := json.Marshal(back.Interface()); string(bb) != string(fb) {
				t.Errorf("a round trip changed it:\n%s\n%s", fb, bb)
			}
		})
	}
}

// spec is a VM as the file makes it, the Spec of a status.
func spec(t *testing.T) *config.VM {
	t.Helper()
	cfg, err := config.Parse("infra.yaml", []byte(`vms: { web: { index: 1, image: "registry.example/web:1", ports: [80], volumes: [{ name: data, mountPoint: /data, size: 1G }] } }`), config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return cfg.VMs[0]
}

// fill sets every field of v to a value that is not its zero: "s", 1,
// true, one element in each slice and map; a VM's spec is vm, whose JSON
// is the config package's own.
func fill(v reflect.Value, vm *config.VM, depth int) {
	switch v.Type() {
	case reflect.TypeOf(time.Time{}):
		v.Set(reflect.ValueOf(time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)))
		return
	case reflect.TypeOf(vm):
		v.Set(reflect.ValueOf(vm))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString("s")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(1)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(1.5)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		fill(p.Elem(), vm, depth+1)
		v.Set(p)
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 1, 1)
		fill(s.Index(0), vm, depth+1)
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k, vm, depth+1)
		fill(e, vm, depth+1)
		m.SetMapIndex(k, e)
		v.Set(m)
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), vm, depth+1)
			}
		}
	}
}
