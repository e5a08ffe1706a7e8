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

// LaunchVolumes says what the VM's last launch did to each of its data
// volumes ("created", "grown", "kept"; nil before a launch ran).
func (s *Supervisor) LaunchVolumes(name string) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v := s.vms[name]; v != nil {
		return v.volumes
	}
	return nil
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
