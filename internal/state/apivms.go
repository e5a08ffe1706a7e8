package state

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// APIVMDir holds the VMs put one by one through the daemon's API (PUT
// /v1/vms/{name}), one file each: the VM's entry as a file would hold it.
// A whole file's apply leaves these VMs alone; a restarted daemon has them
// again.
func (d Dir) APIVMDir() string { return filepath.Join(d.Root, "api-vms") }

// APIVMPath is the record of the VM name put through the API.
func (d Dir) APIVMPath(name string) string { return filepath.Join(d.APIVMDir(), name+".yaml") }

// WriteAPIVM records the entry of the VM name put through the API.
func (d Dir) WriteAPIVM(name string, entry []byte) error {
	if err := os.MkdirAll(d.APIVMDir(), 0o700); err != nil {
		return fmt.Errorf("record VM %s: %w", name, err)
	}
	return WriteFile(d.APIVMPath(name), entry, 0o600)
}

// RemoveAPIVM forgets the VM name put through the API.
func (d Dir) RemoveAPIVM(name string) error {
	if err := os.Remove(d.APIVMPath(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("forget VM %s: %w", name, err)
	}
	return nil
}

// APIVMs reads the entries of every VM put through the API, by name.
func (d Dir) APIVMs() (map[string][]byte, error) {
	out := map[string][]byte{}
	entries, err := os.ReadDir(d.APIVMDir())
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("the VMs put through the API: %w", err)
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".yaml")
		if !ok || e.IsDir() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(d.APIVMDir(), e.Name()))
		if err != nil {
			return nil, fmt.Errorf("the VMs put through the API: %w", err)
		}
		out[name] = data
	}
	return out, nil
}
