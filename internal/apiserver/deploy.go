package apiserver

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/deploy"
)

// deployRoutes are the GitOps endpoints.
func deployRoutes(mux *http.ServeMux, dep *deploy.Engine) {
	with := func(h func(w http.ResponseWriter, r *http.Request)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if dep == nil {
				writeErr(w, http.StatusConflict, errors.New("the daemon is not deploying from git (start it with --git-url)"))
				return
			}
			h(w, r)
		}
	}
	mux.HandleFunc("GET /v1/deploy", with(func(w http.ResponseWriter, r *http.Request) {
		st, err := dep.Status()
		if err != nil {
			writeErr(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, http.StatusOK, st)
	}))
	mux.HandleFunc("GET /v1/deploy/history", with(func(w http.ResponseWriter, r *http.Request) {
		h, err := dep.History()
		if err != nil {
			writeErr(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, http.StatusOK, h)
	}))
	mux.HandleFunc("POST /v1/deploy/trigger", with(func(w http.ResponseWriter, r *http.Request) {
		dep.Trigger()
		writeJSON(w, http.StatusAccepted, apitypes.TriggerResponse{Triggered: true})
	}))
	for path, on := range map[string]bool{"suspend": true, "resume": false} {
		mux.HandleFunc("POST /v1/deploy/"+path, with(func(w http.ResponseWriter, r *http.Request) {
			dep.Suspend(on)
			writeJSON(w, http.StatusOK, apitypes.SuspendResponse{Suspended: on})
		}))
	}
	mux.HandleFunc("POST /v1/deploy/rollback", with(func(w http.ResponseWriter, r *http.Request) {
		n := 0
		if s := r.URL.Query().Get("generation"); s != "" {
			var err error
			if n, err = strconv.Atoi(s); err != nil || n < 1 {
				writeErr(w, http.StatusBadRequest, fmt.Errorf("generation %q is not a generation number", s))
				return
			}
		}
		g, err := dep.Rollback(r.Context(), n)
		if err != nil && g == nil {
			writeErr(w, http.StatusConflict, err)
			return
		}
		code := http.StatusOK
		if err != nil {
			code = http.StatusInternalServerError
		}
		writeJSON(w, code, g)
	}))
}
