package config

import (
	"encoding/json"
	"fmt"

	"github.com/invopop/jsonschema"
)

// SchemaID is the $id of the generated JSON Schema.
const SchemaID = "https://microvm.dev/schema/infra.schema.json"

// Schema generates the JSON Schema of the config file from the Go types, so
// editors can complete and check infra.yaml. When srcDir names this
// package's source directory, the types' doc comments become descriptions.
func Schema(srcDir string) ([]byte, error) {
	r := &jsonschema.Reflector{
		FieldNameTag:   "yaml",
		DoNotReference: false,
	}
	if srcDir != "" {
		if err := r.AddGoComments("microvm.dev/microvm/internal/config", srcDir); err != nil {
			return nil, fmt.Errorf("schema: read doc comments: %w", err)
		}
	}
	s := r.Reflect(&File{})
	s.ID = SchemaID
	s.Title = "microvm fleet file (infra.yaml)"
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	return append(b, '\n'), nil
}

// JSONSchemaExtend lists the hypervisors' names as the enum of
// vms.*.hypervisor, from the one list of them.
func (VMSpec) JSONSchemaExtend(s *jsonschema.Schema) {
	if s.Properties == nil {
		return
	}
	if p, ok := s.Properties.Get("hypervisor"); ok {
		for _, n := range Hypervisors() {
			p.Enum = append(p.Enum, n)
		}
	}
}
