package qemu

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"time"

	"microvm.dev/microvm/internal/vmm"
)

// liveTimeout bounds the disks' first copy in a live move (and, on the
// receiving side, the whole move); convergeTimeout the memory's passes: a
// guest that dirties its memory faster than it goes over does not move
// live (it runs on here, and the caller moves it otherwise).
const (
	liveTimeout     = time.Hour
	convergeTimeout = 5 * time.Minute
)

// LiveOut moves the running guest as libvirt's migration with
// non-shared storage does: each volume is mirrored (drive-mirror, in
// full, onto the export of the same name that the other QEMU serves over
// NBD) until the copy is in sync and stays so while written; then the
// guest's memory migrates while it runs (pre-copy, the downtime limit
// given; not auto-converge, which throttles the guest). Under TCG (no
// KVM) the guest is paused before its memory goes instead (stop and
// copy: the downtime is the memory's transfer): a TCG guest whose memory
// went while it ran, busy with network traffic, arrived with its memory
// corrupted in about one move of twenty (QEMU 7.2: slab corruption,
// virtio-net's ring "id is not a head", a reset at once), and none that
// was paused did. The migration pauses before the switch-over
// (pause-before-switchover): the guest is paused, the mirrors are ended
// (their last writes are on the other side), and only then is the
// device state sent, so the other side never runs on a disk behind its
// memory. Any error before the switch-over cancels the mirrors and the
// migration and lets the guest run on here.
func (Backend) LiveOut(l vmm.Launch, nbd, migration string, downtime time.Duration) (vmm.LiveStats, error) {
	var st vmm.LiveStats
	s, err := dialQMP(l.ControlSocket, 10*time.Second)
	if err != nil {
		return st, err
	}
	defer s.Close()
	jobs := make([]string, 0, len(l.Disks))
	undo := func(cause error) error {
		s.Deadline(30 * time.Second)
		s.Run("migrate_cancel", nil)
		for _, j := range jobs {
			s.Run("block-job-cancel", map[string]any{"device": j, "force": true})
		}
		s.Run("migrate-set-capabilities", map[string]any{"capabilities": []map[string]any{
			{"capability": "pause-before-switchover", "state": false},
		}})
		s.Run("cont", nil)
		return cause
	}
	for i, d := range l.Disks {
		job := fmt.Sprintf("move-vol%d", i)
		target := (&url.URL{Scheme: "nbd+unix", Path: "/" + d.Name, RawQuery: "socket=" + url.QueryEscape(nbd)}).String()
		s.Deadline(30 * time.Second)
		if _, err := s.Run("drive-mirror", map[string]any{
			"job-id": job, "device": fmt.Sprintf("vol%d", i), "target": target,
			"format": "raw", "sync": "full", "mode": "existing",
		}); err != nil {
			return st, undo(fmt.Errorf("mirror volume %s: %w", d.Name, err))
		}
		jobs = append(jobs, job)
	}
	if st.DiskBytes, err = waitMirrors(s, jobs); err != nil {
		return st, undo(err)
	}
	s.Deadline(30 * time.Second)
	if _, err := s.Run("migrate-set-capabilities", map[string]any{"capabilities": []map[string]any{
		{"capability": "pause-before-switchover", "state": true},
	}}); err != nil {
		return st, undo(err)
	}
	if _, err := s.Run("migrate-set-parameters", map[string]any{
		"downtime-limit": max(1, downtime.Milliseconds()), "max-bandwidth": int64(1) << 40,
	}); err != nil {
		return st, undo(err)
	}
	var stopped time.Time // when the guest was paused for a stop and copy
	if !l.KVM {
		if _, err := s.Run("stop", nil); err != nil {
			return st, undo(err)
		}
		stopped = time.Now()
	}
	if _, err := s.Run("migrate", map[string]any{"uri": "unix:" + migration}); err != nil {
		return st, undo(err)
	}
	for deadline := time.Now().Add(convergeTimeout); ; time.Sleep(20 * time.Millisecond) {
		m, err := queryMigrate(s)
		if err != nil {
			return st, undo(err)
		}
		switch m.Status {
		case "pre-switchover":
			// Paused: the mirrors' last writes go over, then the devices.
			if err := endMirrors(s, jobs); err != nil {
				return st, undo(err)
			}
			jobs = nil
			if _, err := s.Run("migrate-continue", map[string]any{"state": "pre-switchover"}); err != nil {
				return st, undo(err)
			}
		case "completed":
			st.Downtime = time.Duration(m.Downtime) * time.Millisecond
			if !stopped.IsZero() {
				st.Downtime = time.Since(stopped)
			}
			st.RAMBytes = m.RAM.Transferred
			return st, nil
		case "failed", "cancelled":
			return st, undo(fmt.Errorf("migration %s: %s", m.Status, m.ErrorDesc))
		}
		if time.Now().After(deadline) && m.Status != "pre-switchover" && m.Status != "device" {
			return st, undo(fmt.Errorf("the migration is still %s after %s (a guest that writes its memory faster than it goes over does not move live)", m.Status, convergeTimeout))
		}
	}
}

// LiveIn serves the guest's volumes over NBD at nbd, each under its
// volume's name and writable (the other side mirrors onto them), and
// takes the migration at migration; once it completed the NBD server is
// stopped and the guest runs.
func (Backend) LiveIn(l vmm.Launch, nbd, migration string) error {
	s, err := dialRetry(l.ControlSocket)
	if err != nil {
		return err
	}
	defer s.Close()
	// The server listens under another name until every export is there:
	// a client that came earlier would find no export.
	early := nbd + ".new"
	if _, err := s.Run("nbd-server-start", map[string]any{"addr": map[string]any{"type": "unix", "data": map[string]string{"path": early}}}); err != nil {
		return err
	}
	for i, d := range l.Disks {
		if _, err := s.Run("nbd-server-add", map[string]any{"device": fmt.Sprintf("vol%d", i), "name": d.Name, "writable": true}); err != nil {
			return fmt.Errorf("serve volume %s: %w", d.Name, err)
		}
	}
	if err := os.Rename(early, nbd); err != nil {
		return fmt.Errorf("serve the volumes: %w", err)
	}
	if _, err := s.Run("migrate-incoming", map[string]any{"uri": "unix:" + migration}); err != nil {
		return err
	}
	if err := waitMigration(s, liveTimeout); err != nil {
		return err
	}
	s.Deadline(10 * time.Second)
	if _, err := s.Run("nbd-server-stop", nil); err != nil {
		return err
	}
	_, err = s.Run("cont", nil)
	return err
}

// dialRetry connects to the QMP socket of a QEMU just started.
func dialRetry(socket string) (*session, error) {
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		s, err := dialQMP(socket, 5*time.Second)
		if err == nil || time.Now().After(deadline) {
			return s, err
		}
	}
}

// blockJob is one entry of query-block-jobs.
type blockJob struct {
	Device string `json:"device"`
	Ready  bool   `json:"ready"`
	Status string `json:"status"`
	Offset int64  `json:"offset"`
	Len    int64  `json:"len"`
}

func queryJobs(s *session) ([]blockJob, error) {
	s.Deadline(10 * time.Second)
	raw, err := s.Run("query-block-jobs", nil)
	if err != nil {
		return nil, err
	}
	var jobs []blockJob
	if err := json.Unmarshal(raw, &jobs); err != nil {
		return nil, fmt.Errorf("qmp query-block-jobs: %w", err)
	}
	return jobs, nil
}

// waitMirrors waits until every job is in sync (ready), and returns the
// bytes they copied; a job that ended on its own failed.
func waitMirrors(s *session, jobs []string) (int64, error) {
	for deadline := time.Now().Add(liveTimeout); ; time.Sleep(50 * time.Millisecond) {
		list, err := queryJobs(s)
		if err != nil {
			return 0, err
		}
		var ready int
		var copied int64
		for _, j := range jobs {
			i := slices.IndexFunc(list, func(b blockJob) bool { return b.Device == j })
			if i < 0 {
				return 0, fmt.Errorf("the mirror %s ended before it was in sync (the other side's NBD export went away?)", j)
			}
			copied += list[i].Offset
			if list[i].Ready {
				ready++
			}
		}
		if ready == len(jobs) {
			return copied, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("the volumes' mirrors not in sync after %s", liveTimeout)
		}
	}
}

// endMirrors ends in-sync mirrors of a paused guest (block-job-cancel of
// a ready job completes its copy and leaves the source as it was) and
// waits until they are gone.
func endMirrors(s *session, jobs []string) error {
	for _, j := range jobs {
		s.Deadline(30 * time.Second)
		if _, err := s.Run("block-job-cancel", map[string]any{"device": j}); err != nil {
			return fmt.Errorf("end the mirror %s: %w", j, err)
		}
	}
	for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(20 * time.Millisecond) {
		list, err := queryJobs(s)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(list, func(b blockJob) bool { return slices.Contains(jobs, b.Device) }) {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("the volumes' mirrors did not end")
		}
	}
}

// migrationStatus is what query-migrate says.
type migrationStatus struct {
	Status    string `json:"status"`
	ErrorDesc string `json:"error-desc"`
	Downtime  int64  `json:"downtime"`
	RAM       struct {
		Transferred int64 `json:"transferred"`
	} `json:"ram"`
}

func queryMigrate(s *session) (migrationStatus, error) {
	var m migrationStatus
	s.Deadline(10 * time.Second)
	raw, err := s.Run("query-migrate", nil)
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return m, fmt.Errorf("qmp query-migrate: %w", err)
	}
	return m, nil
}
