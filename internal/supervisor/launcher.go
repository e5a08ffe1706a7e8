package supervisor

import (
	"context"
	"time"

	"microvm.dev/microvm/internal/apitypes"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/state"
	"microvm.dev/microvm/internal/steps"
)

// Launcher starts and adopts VM processes for the supervisor. The daemon's
// launches real hypervisors (internal/launch); tests give a fake, so the
// restart policy, backoff, crash loop and adoption are checked without one.
type Launcher interface {
	// Launch prepares vm and starts its hypervisor, returning once the
	// process runs (not once the guest is ready). Cancelling ctx cancels
	// the preparation (a pull, for one).
	Launch(ctx context.Context, vm *config.VM, observe func(steps.Timing)) (Process, error)
	// Adopt takes over the live hypervisor rec names, or fails (with the
	// reason) when rec's process is not that VM's hypervisor any more.
	Adopt(rec state.RunRecord) (Process, error)
}

// SaveInfo is how a save went: the state's size and how long it took.
type SaveInfo = apitypes.SaveInfo

// Process is one started (or adopted) hypervisor.
type Process interface {
	// PID is the hypervisor's process id.
	PID() int
	// StartedAt is when the hypervisor was started.
	StartedAt() time.Time
	// WaitReady waits until the guest reports ready, it fails, or timeout.
	WaitReady(timeout time.Duration) error
	// Readiness is how the guest said it came up (an image's init:
	// "running", "degraded: a.service"; "" otherwise).
	Readiness() string
	// Exited is closed once the process has exited; ExitErr is then nil
	// for a clean power-off.
	Exited() <-chan struct{}
	ExitErr() error
	// Stop shuts the guest down cleanly within timeout, then by force.
	Stop(timeout time.Duration) error
	// Save saves the guest's state and ends the process; on an error the
	// guest still runs.
	Save() (SaveInfo, error)
	// Boot says how the guest came up: a cold boot or a resume (and why
	// a saved state was dropped).
	Boot() string
	// Pause and Resume stop and restart the guest's vCPUs.
	Pause() error
	Resume() error
	// Record is the run record of the process.
	Record() state.RunRecord
	// ConsoleLog is the guest's serial console log.
	ConsoleLog() string
	// Timings are the launch's steps, each timed (none when adopted).
	Timings() []steps.Timing
	// Volumes says what the launch did to each data volume: "created",
	// "grown" or "kept" (none when adopted).
	Volumes() map[string]string
}
