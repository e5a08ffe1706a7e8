package apiserver

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/daemon"
)

// lifecycleRoutes start, stop, save and restart a VM, and stop them all.
func lifecycleRoutes(mux *http.ServeMux, d *daemon.Daemon) {
	sup := d.Supervisor()
	action := func(do func(name string) error) http.HandlerFunc {
		return withVM(func(w http.ResponseWriter, r *http.Request, name string) {
			if err := do(name); err != nil {
				writeErr(w, http.StatusConflict, err)
				return
			}
			st, _ := d.Status(name)
			writeJSON(w, http.StatusOK, st)
		})
	}
	start := func(name string) error {
		vm := d.VMConfig(name)
		if vm == nil {
			return fmt.Errorf("%s is not in the applied file", name)
		}
		if vm.Template {
			return fmt.Errorf("%s is a template: it is booted only to be saved for its clones (microvm clone %s NAME)", name, name)
		}
		// The boot goes on if the client goes away (as the restart policy's
		// boots do); stopping the VM cancels it.
		return sup.Start(context.Background(), vm)
	}
	mux.HandleFunc("POST /v1/vms/{name}/start", action(start))
	mux.HandleFunc("POST /v1/vms/{name}/stop", action(d.Stop))
	mux.HandleFunc("POST /v1/vms/{name}/take", withVM(func(w http.ResponseWriter, r *http.Request, name string) {
		timeout := 2 * time.Minute
		if s := r.URL.Query().Get("timeout"); s != "" {
			t, err := time.ParseDuration(s)
			if err != nil {
				writeErr(w, http.StatusBadRequest, fmt.Errorf("timeout: %w", err))
				return
			}
			timeout = t
		}
		st, err := d.Take(name, timeout)
		if err != nil {
			writeErr(w, http.StatusConflict, err)
			return
		}
		writeJSON(w, http.StatusOK, st)
	}))
	mux.HandleFunc("POST /v1/vms/{name}/save", withVM(func(w http.ResponseWriter, r *http.Request, name string) {
		out, err := d.Save(name)
		if err != nil {
			writeErr(w, http.StatusConflict, err)
			return
		}
		st, _ := d.Status(name)
		writeJSON(w, http.StatusOK, apitypes.SaveResponse{Status: st, Outcome: out})
	}))
	mux.HandleFunc("POST /v1/stop", func(w http.ResponseWriter, r *http.Request) {
		save, _ := strconv.ParseBool(r.URL.Query().Get("save"))
		res := d.StopAll(save)
		for _, s := range res {
			if s.Error != "" {
				writeJSON(w, http.StatusInternalServerError, res)
				return
			}
		}
		writeJSON(w, http.StatusOK, res)
	})
	mux.HandleFunc("POST /v1/vms/{name}/restart", action(func(name string) error {
		if err := sup.Stop(name); err != nil {
			return err
		}
		return start(name)
	}))
}
