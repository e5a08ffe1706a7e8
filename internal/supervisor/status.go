package supervisor

import (
	"os"
	"sort"
	"strings"

	"microvm.dev/microvm/internal/apitypes"
)

// Status is what the supervisor knows about one VM (the API's
// apitypes.VMStatus).
type Status = apitypes.VMStatus

// snapshot is what a VM's loop last published: its status, and its
// hypervisor while it runs.
type snapshot struct {
	status  Status
	run     Process // while Running
	volumes map[string]string
}

// publish makes the VM's state what readers see, and tells the watchers
// of Changes. It runs in the VM's loop.
func (v *vmLoop) publish() {
	st := Status{Name: v.name, State: v.state, Restarts: v.restarts, LastExit: v.lastExit, ExitCode: v.exitCode, Failure: v.failure, Spec: v.spec,
		BootSeconds: v.boot.Seconds(), PrepareSeconds: v.prepare.Seconds(), Steps: v.steps, Boot: v.bootNote}
	if v.spec != nil {
		st.SpecHash = v.spec.SpecHash()
	}
	snap := snapshot{status: st, volumes: v.volumes}
	if v.run != nil {
		snap.status.PID, snap.status.StartedAt = v.run.PID(), v.started
		if v.state == Running {
			snap.status.Readiness = v.run.Readiness()
			snap.run = v.run
		}
	}
	s := v.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.vms[v.name] != v {
		return // forgotten
	}
	s.published[v.name] = snap
	s.changedLocked()
}

// Process returns the running hypervisor of a VM that is running.
func (s *Supervisor) Process(name string) (Process, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.published[name].run
	return r, r != nil
}

// LaunchVolumes says what the VM's last launch did to each of its data
// volumes ("created", "grown", "kept"; nil before a launch ran).
func (s *Supervisor) LaunchVolumes(name string) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.published[name].volumes
}

// Running reports the spec hash of each VM that is running or starting.
func (s *Supervisor) Running() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	for name, p := range s.published {
		if p.status.PID != 0 {
			out[name] = p.status.SpecHash
		}
	}
	return out
}

// Status reports one VM.
func (s *Supervisor) Status(name string) (Status, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.published[name]
	return p.status, ok
}

// List reports every VM, by name.
func (s *Supervisor) List() []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Status, 0, len(s.published))
	for _, p := range s.published {
		out = append(out, p.status)
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
