package apitypes

import (
	"time"

	"microvm.dev/microvm/internal/config"
)

// State is a VM's lifecycle state.
type State string

// The states a VM can be in.
const (
	Starting State = "starting"
	Running  State = "running"
	Stopping State = "stopping"
	Stopped  State = "stopped"
	Backoff  State = "backoff" // waiting to be restarted
	Failed   State = "failed"  // crash loop or failed start; needs start or apply
	// Saved is a VM stopped by saving its state: `start` resumes it.
	Saved State = "saved"
	// Created is a VM of the applied file that was never started
	// (autostart: false): its network is made, `start` boots it.
	Created State = "created"
)

// VMStatus is one VM as GET /v1/vms and GET /v1/vms/{name} report it, and
// as each "vms" event of GET /v1/events lists it.
type VMStatus struct {
	Name        string    `json:"name"`
	State       State     `json:"state"`
	PID         int       `json:"pid,omitempty"`
	StartedAt   time.Time `json:"startedAt,omitzero"`
	BootSeconds float64   `json:"bootSeconds,omitempty"`
	// PrepareSeconds is how long the last start took before the hypervisor
	// ran: initramfs, keys, volumes, process start.
	PrepareSeconds float64 `json:"prepareSeconds,omitempty"`
	// Readiness is how an image's own init came up ("running", "degraded:
	// a.service, b.service"; "" for workload VMs).
	Readiness string `json:"readiness,omitempty"`
	// Boot says how the last start brought the guest up: a cold boot, a
	// resume of its saved state, or a cold boot because the saved state
	// was dropped (and why).
	Boot string `json:"boot,omitempty"`
	// Steps are the last launch's steps, each timed.
	Steps    []StepTiming `json:"steps,omitempty"`
	Restarts int          `json:"restarts"`
	LastExit string       `json:"lastExit,omitempty"`
	// ExitCode is the workload's exit status when its end ended the VM
	// (128+signal for a signal).
	ExitCode *int   `json:"exitCode,omitempty"`
	Failure  string `json:"failure,omitempty"`
	SpecHash string `json:"specHash"`
	// Spec is the VM as applied, its secrets' values Redacted.
	Spec *config.VM `json:"spec"`
	// HostMemory is what the running VM costs the host, as last measured.
	HostMemory *HostMemory `json:"hostMemory,omitempty"`
	// Netns is the network namespace the VM's network is in (the
	// daemon's --netns), where its address is reached; empty for the
	// host's own.
	Netns string `json:"netns,omitempty"`
}

// Redacted is what the API says of a secret's value: never its ciphertext.
const Redacted = "(age-encrypted; not shown)"

// StepTiming is how long one step of a launch took.
type StepTiming struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
}

// SaveInfo is how a save went: the state's size and how long it took.
type SaveInfo struct {
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
}

// SaveOutcome is how a save (stop --save) ended.
type SaveOutcome struct {
	// Saved says the state was saved; the VM is then Saved.
	Saved bool `json:"saved"`
	SaveInfo

	// Fallback says why the VM was shut down cleanly instead.
	Fallback string `json:"fallback,omitempty"`
}

// SaveResponse answers POST /v1/vms/{name}/save: the VM's status after
// it, and whether it was saved or (why it was) shut down instead.
type SaveResponse struct {
	Status  VMStatus    `json:"status"`
	Outcome SaveOutcome `json:"outcome"`
}

// RemoveResponse answers DELETE /v1/vms/{name}.
type RemoveResponse struct {
	Removed string `json:"removed"`
	// Purged says the VM's volumes and state went with it (?purge=true).
	Purged bool `json:"purged"`
}

// RestoreResponse answers POST /v1/vms/{name}/snapshots/restore.
type RestoreResponse struct {
	Restored string `json:"restored"`
	// Previous is the snapshot taken of the volume before it was rolled
	// back, so the restore can be undone.
	Previous Snapshot `json:"previous"`
}

// ErrorResponse is the body of every refusal (4xx, 5xx) that carries no
// result of its own.
type ErrorResponse struct {
	Error string `json:"error"`
}

// EventVMs names the event of GET /v1/events (server-sent events) whose
// data is the VM list, []VMStatus as GET /v1/vms answers it: sent at once
// and after every change of a VM's state.
const EventVMs = "vms"
