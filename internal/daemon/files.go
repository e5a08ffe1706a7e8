package daemon

import (
	"path/filepath"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/state"
)

// What the daemon keeps on disk and in its applied file, for the API and
// the deploy loop: the applied VMs, the run records, the logs and the
// consoles' paths.

// VMConfig returns a VM of the applied file.
func (d *Daemon) VMConfig(name string) *config.VM {
	if cfg := d.applied(); cfg != nil {
		return cfg.VM(name)
	}
	return nil
}

// RunRecords are the VMs' run records by name: the spec each last ran
// with and the image it booted.
func (d *Daemon) RunRecords() (map[string]state.RunRecord, error) {
	recs, err := state.Dir{Root: d.env.StateDir}.RunRecords()
	if err != nil {
		return nil, err
	}
	out := map[string]state.RunRecord{}
	for _, r := range recs {
		out[r.Name] = r
	}
	return out, nil
}

// applied is the applied file (nil before the first apply).
func (d *Daemon) applied() *config.Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

// DaemonLog is the daemon's own log file (text, rotated by size).
func DaemonLog(stateDir string) string { return filepath.Join(stateDir, "log", "daemon.log") }

// DaemonLog is this daemon's own log file.
func (d *Daemon) DaemonLog() string { return DaemonLog(d.env.StateDir) }

// ConsoleSocket is the unix socket of name's interactive serial console.
func (d *Daemon) ConsoleSocket(name string) string { return d.env.Layout(name).ConsoleSocket() }

// ConsoleLog is the path of a VM's console log.
func (d *Daemon) ConsoleLog(name string) string { return d.env.Layout(name).ConsoleLog() }
