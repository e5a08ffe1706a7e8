package config

import (
	"fmt"

	"go.yaml.in/yaml/v3"
)

// WithImages returns the file data with the image of each VM named in
// images set to the image given (written into the VM's own entry, taking
// the place of the defaults' image): how a rollback boots the digests its
// generation ran. Comments and layout are not kept.
func WithImages(data []byte, images map[string]string) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("not a mapping")
	}
	vms := mappingValue(doc.Content[0], "vms")
	if vms == nil || vms.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("no vms")
	}
	for name, image := range images {
		vm := mappingValue(vms, name)
		if vm == nil || vm.Kind != yaml.MappingNode {
			return nil, fmt.Errorf("vms.%s: not in the file", name)
		}
		vm.Style = 0 // block style: a flow mapping may hold a new key awkwardly
		if v := mappingValue(vm, "image"); v != nil {
			v.Kind, v.Tag, v.Value, v.Style = yaml.ScalarNode, "!!str", image, yaml.DoubleQuotedStyle
			continue
		}
		vm.Content = append(vm.Content,
			&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "image"},
			&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: image, Style: yaml.DoubleQuotedStyle})
	}
	return yaml.Marshal(&doc)
}

// mappingValue is the value of key in the mapping node m, or nil.
func mappingValue(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}
