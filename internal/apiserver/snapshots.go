package apiserver

import (
	"errors"
	"fmt"
	"net/http"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/daemon"
	"microvm.dev/microvm/internal/snapshot"
)

// snapshotRoutes list, take and restore a VM's volume snapshots, and list
// its backups off the host.
func snapshotRoutes(mux *http.ServeMux, d *daemon.Daemon) {
	mux.HandleFunc("GET /v1/vms/{name}/snapshots", withVM(func(w http.ResponseWriter, r *http.Request, name string) {
		list, err := d.Snapshots(name)
		if err != nil {
			writeErr(w, http.StatusInternalServerError, err)
			return
		}
		if list == nil {
			list = []snapshot.Snapshot{}
		}
		writeJSON(w, http.StatusOK, list)
	}))
	mux.HandleFunc("POST /v1/vms/{name}/snapshots", withVM(func(w http.ResponseWriter, r *http.Request, name string) {
		vol := r.URL.Query().Get("volume")
		if vol != "" && !volRE.MatchString(vol) {
			writeErr(w, http.StatusBadRequest, fmt.Errorf("%q is not a volume name", vol))
			return
		}
		list, err := d.Snapshot(name, vol)
		switch {
		case errors.Is(err, daemon.ErrUnknownVM):
			writeErr(w, http.StatusNotFound, err)
		case errors.Is(err, daemon.ErrNoVolume):
			writeErr(w, http.StatusBadRequest, err)
		case err != nil:
			writeErr(w, http.StatusInternalServerError, err)
		default:
			writeJSON(w, http.StatusOK, list)
		}
	}))
	mux.HandleFunc("GET /v1/vms/{name}/backups", withVM(func(w http.ResponseWriter, r *http.Request, name string) {
		list, err := d.Backups(name)
		switch {
		case errors.Is(err, daemon.ErrUnknownVM):
			writeErr(w, http.StatusNotFound, err)
		case errors.Is(err, daemon.ErrNoBackup):
			writeErr(w, http.StatusBadRequest, err)
		case err != nil:
			writeErr(w, http.StatusBadGateway, err)
		default:
			if list == nil {
				list = []apitypes.Backup{}
			}
			writeJSON(w, http.StatusOK, list)
		}
	}))
	mux.HandleFunc("POST /v1/vms/{name}/snapshots/restore", withVM(func(w http.ResponseWriter, r *http.Request, name string) {
		snap := r.URL.Query().Get("snapshot")
		if !snapRE.MatchString(snap) {
			writeErr(w, http.StatusBadRequest, fmt.Errorf("%q is not a snapshot name (volume@time, from microvm volume snapshots)", snap))
			return
		}
		from := r.URL.Query().Get("from")
		if from != "" && from != "backup" {
			writeErr(w, http.StatusBadRequest, fmt.Errorf("from=%q: the only other source is backup", from))
			return
		}
		before, err := d.Restore(name, snap, from == "backup")
		switch {
		case errors.Is(err, daemon.ErrUnknownVM):
			writeErr(w, http.StatusNotFound, err)
		case errors.Is(err, daemon.ErrRunning):
			writeErr(w, http.StatusConflict, err)
		case err != nil:
			writeErr(w, http.StatusBadRequest, err)
		default:
			writeJSON(w, http.StatusOK, apitypes.RestoreResponse{Restored: snap, Previous: before})
		}
	}))
}
