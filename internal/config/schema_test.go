package config

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"microvm.dev/microvm/internal/testutil"
)

// TestSchemaIsCurrent keeps docs/infra.schema.json equal to what the Go types
// generate (go test ./internal/config -run Schema -update rewrites it).
func TestSchemaIsCurrent(t *testing.T) {
	b, err := Schema(".")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("schema is not JSON: %v", err)
	}
	testutil.GoldenPath(t, "../../docs/infra.schema.json", b)
}

// TestSchemaChecksFiles: the generated schema accepts the reference file and
// rejects what the decoder rejects structurally, as an editor would.
func TestSchemaChecksFiles(t *testing.T) {
	b, err := Schema("")
	if err != nil {
		t.Fatal(err)
	}
	var raw any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(SchemaID, raw); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(SchemaID)
	if err != nil {
		t.Fatalf("schema does not compile: %v", err)
	}
	ref, err := os.ReadFile("../../examples/reference/infra.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		src   string
		valid bool
	}{
		"reference":      {string(ref), true},
		"kernel path":    {"vms: { a: { index: 1, kernel: { path: /k } } }", true},
		"port string":    {"vms: { a: { index: 1, ports: [\"53/udp\", 80] } }", true},
		"unknown key":    {"vms: { a: { index: 1, memroy: 1G } }", false},
		"bad size":       {"vms: { a: { index: 1, memory: lots } }", false},
		"bad kernel":     {"vms: { a: { index: 1, kernel: guest } }", false},
		"missing vms":    {"host: {}", false},
		"bad hypervisor": {"vms: { a: { index: 1, hypervisor: xen } }", false},
	} {
		var doc any
		if err := yaml.Unmarshal([]byte(c.src), &doc); err != nil {
			t.Fatal(err)
		}
		// Round-trip through JSON so the validator sees JSON types.
		jb, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		inst, _ := jsonschema.UnmarshalJSON(strings.NewReader(string(jb)))
		err = sch.Validate(inst)
		if (err == nil) != c.valid {
			t.Errorf("%s: schema validation error = %v, want valid=%v", name, err, c.valid)
		}
	}
}
