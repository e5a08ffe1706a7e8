package kubelet

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/state"
)

// podRecord is what the provider keeps of one pod on disk, so that a
// restarted provider knows its VMs again: the pod as it was given, the
// subnet it was given, why it was refused, if it was, and how it ended,
// once it finished (a finished pod's VM is never started again), and the
// restarts the daemon's count of the VM's no longer holds (the provider's
// own starts of it, and the daemon's count before it restarted), and the
// logins of its imagePullSecrets, their passwords age-encrypted to the
// host (LoginsRead once the secrets were read, even if none was usable).
type podRecord struct {
	Pod        *corev1.Pod                      `json:"pod"`
	Subnet     netip.Prefix                     `json:"subnet"`
	Refusal    string                           `json:"refusal,omitempty"`
	Finished   *corev1.ContainerStateTerminated `json:"finished,omitempty"`
	Restarts   int32                            `json:"restarts,omitempty"`
	Logins     map[string]config.RegistryAuth   `json:"logins,omitempty"`
	LoginsRead bool                             `json:"loginsRead,omitempty"`
}

// records is the directory of records, one JSON file per VM name.
type records struct{ dir string }

func (r records) path(vm string) string { return filepath.Join(r.dir, vm+".json") }

// save writes rec for the VM vm atomically.
func (r records) save(vm string, rec *podRecord) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("record of pod %s/%s: %w", rec.Pod.Namespace, rec.Pod.Name, err)
	}
	if err := os.MkdirAll(r.dir, 0o700); err != nil {
		return err
	}
	return state.WriteFile(r.path(vm), data, 0o600)
}

// remove forgets the VM vm's record.
func (r records) remove(vm string) error {
	if err := os.Remove(r.path(vm)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// load reads every record by VM name.
func (r records) load() (map[string]*podRecord, error) {
	out := map[string]*podRecord{}
	entries, err := os.ReadDir(r.dir)
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("the provider's records: %w", err)
	}
	for _, e := range entries {
		vm, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		data, err := os.ReadFile(filepath.Join(r.dir, e.Name()))
		if err != nil {
			return nil, err
		}
		var rec podRecord
		if err := json.Unmarshal(data, &rec); err != nil || rec.Pod == nil {
			return nil, fmt.Errorf("the provider's record %s is damaged: %v", e.Name(), err)
		}
		out[vm] = &rec
	}
	return out, nil
}
