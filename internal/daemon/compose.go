package daemon

import (
	"fmt"
	"maps"
	"runtime"
	"slices"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/state"
)

// Parse validates a file against this host, with the VMs put through the
// API added (config.ParseWith).
func (d *Daemon) Parse(name string, data []byte) (*config.Config, error) {
	return d.compose(name, data, d.apiEntries())
}

// compose is config.ParseWith against this host.
func (d *Daemon) compose(name string, data []byte, api map[string][]byte) (*config.Config, error) {
	opts, err := d.net.Host().HostOptions(runtime.NumCPU())
	if err != nil {
		return nil, err
	}
	// The file's VMs moved to other hosts are not this host's any more.
	moved, err := state.Dir{Root: d.env.StateDir}.MovedVMs()
	if err != nil {
		return nil, err
	}
	here, err := config.WithoutVMs(data, slices.Collect(maps.Keys(moved)))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	// A VM that arrived by a move is the file's once the file names it
	// (Apply hands it over: adoptArrived).
	api = maps.Clone(api)
	for vm := range api {
		if _, err := config.Entry(here, vm, ""); err == nil && (state.Dir{Root: d.env.StateDir}).Arrived(vm) {
			delete(api, vm)
		}
	}
	cfg, err := config.ParseWith(name, here, api, opts)
	if err != nil {
		return nil, err
	}
	cfg.Source = data // the file as given: a VM moved back is in it
	return cfg, nil
}
