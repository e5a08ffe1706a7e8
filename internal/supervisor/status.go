package supervisor

import (
	"os"
	"sort"
	"strings"
	"time"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/steps"
)

// Status is what the supervisor knows about one VM.
type Status struct {
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
	Steps    []steps.Timing `json:"steps,omitempty"`
	Restarts int            `json:"restarts"`
	LastExit string         `json:"lastExit,omitempty"`
	// ExitCode is the workload's exit status when its end ended the VM
	// (128+signal for a signal).
	ExitCode *int       `json:"exitCode,omitempty"`
	Failure  string     `json:"failure,omitempty"`
	SpecHash string     `json:"specHash"`
	Spec     *config.VM `json:"spec"`
}

// Process returns the running hypervisor of a VM that is running.
func (s *Supervisor) Process(name string) (Process, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vms[name]
	if v == nil || v.run == nil || v.state != Running {
		return nil, false
	}
	return v.run, true
}

// Status reports one VM.
func (s *Supervisor) Status(name string) (Status, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vms[name]
	if v == nil {
		return Status{}, false
	}
	return s.status(name, v), true
}

func (s *Supervisor) status(name string, v *vmProc) Status {
	st := Status{Name: name, State: v.state, Restarts: v.restarts, LastExit: v.lastExit, ExitCode: v.exitCode, Failure: v.failure, Spec: v.spec,
		BootSeconds: v.boot.Seconds(), PrepareSeconds: v.prepare.Seconds(), Steps: v.steps, Boot: v.bootNote}
	if v.spec != nil {
		st.SpecHash = v.spec.SpecHash()
	}
	if v.run != nil {
		st.PID, st.StartedAt = v.run.PID(), v.started
		if v.state == Running {
			st.Readiness = v.run.Readiness()
		}
	}
	return st
}

// List reports every VM, by name.
func (s *Supervisor) List() []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Status, 0, len(s.vms))
	for name, v := range s.vms {
		out = append(out, s.status(name, v))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func consoleTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no console log)"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
