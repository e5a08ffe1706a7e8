package apiserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/daemon"
	"microvm.dev/microvm/internal/plan"
)

// vmRoutes are the fleet's VMs and the file: list and status, apply a
// whole file, put and remove one VM.
func vmRoutes(mux *http.ServeMux, d *daemon.Daemon) {
	mux.HandleFunc("GET /v1/vms", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, redactAll(d.List()))
	})
	mux.HandleFunc("GET /v1/vms/{name}", withVM(func(w http.ResponseWriter, r *http.Request, name string) {
		st, ok := d.Status(name)
		if !ok {
			writeErr(w, http.StatusNotFound, fmt.Errorf("no VM named %q", name))
			return
		}
		writeJSON(w, http.StatusOK, redact(st))
	}))
	mux.HandleFunc("POST /v1/apply", func(w http.ResponseWriter, r *http.Request) {
		data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
		if err != nil {
			writeErr(w, http.StatusRequestEntityTooLarge, fmt.Errorf("read the file: %w", err))
			return
		}
		name := r.URL.Query().Get("file")
		if name == "" {
			name = "infra.yaml"
		}
		res, err := d.ApplyFile(name, data)
		switch {
		case errors.Is(err, daemon.ErrInvalid):
			writeJSON(w, http.StatusUnprocessableEntity, res)
		case err != nil && res != nil:
			writeJSON(w, http.StatusInternalServerError, apitypes.ApplyFailure{ApplyResult: res, Error: err.Error()})
		case err != nil:
			writeErr(w, http.StatusInternalServerError, err)
		default:
			writeJSON(w, http.StatusOK, res)
		}
	})
	mux.HandleFunc("PUT /v1/vms/{name}", withVM(func(w http.ResponseWriter, r *http.Request, name string) {
		data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
		if err != nil {
			writeErr(w, http.StatusRequestEntityTooLarge, fmt.Errorf("read the VM's entry: %w", err))
			return
		}
		res, err := d.Put(name, data)
		out := apitypes.PutResponse{PutResult: res}
		if st, ok := d.Status(name); ok && res != nil {
			out.Status = &st
		}
		code := http.StatusOK
		switch {
		case errors.Is(err, daemon.ErrInvalid):
			code = http.StatusUnprocessableEntity
		case errors.Is(err, daemon.ErrFileVM):
			writeErr(w, http.StatusConflict, err)
			return
		case err != nil && res == nil:
			writeErr(w, http.StatusInternalServerError, err)
			return
		case err != nil:
			code, out.Error = http.StatusInternalServerError, err.Error()
		case res.VM.Action == plan.Create.Past():
			code = http.StatusCreated
		}
		if out.Status != nil {
			*out.Status = redact(*out.Status)
		}
		writeJSON(w, code, out)
	}))
	mux.HandleFunc("POST /v1/vms/{name}/clone", withVM(func(w http.ResponseWriter, r *http.Request, name string) {
		var req apitypes.CloneRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBody)).Decode(&req); err != nil || len(req.Names) == 0 {
			writeErr(w, http.StatusBadRequest, fmt.Errorf("want {\"names\": [NAME, …]}: %v", err))
			return
		}
		res, err := d.Clone(name, req.Names)
		switch {
		case errors.Is(err, daemon.ErrInvalid):
			writeJSON(w, http.StatusUnprocessableEntity, res)
		case err != nil && len(res.VMs) == 0:
			writeErr(w, http.StatusConflict, err)
		case err != nil:
			writeJSON(w, http.StatusInternalServerError, res)
		default:
			writeJSON(w, http.StatusCreated, res)
		}
	}))
	mux.HandleFunc("DELETE /v1/vms/{name}", withVM(func(w http.ResponseWriter, r *http.Request, name string) {
		purge, _ := strconv.ParseBool(r.URL.Query().Get("purge"))
		if err := d.Remove(name, purge); err != nil {
			writeErr(w, http.StatusConflict, err)
			return
		}
		writeJSON(w, http.StatusOK, apitypes.RemoveResponse{Removed: name, Purged: purge})
	}))
}
