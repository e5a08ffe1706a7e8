package apiserver

import (
	"fmt"
	"net/http"
	"strconv"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/daemon"
)

// hostRoutes are the host's view and checks, the event stream, the VMs'
// samples (memory, CPU, network), a VM's console, and the daemon's and a
// VM's logs.
func hostRoutes(mux *http.ServeMux, d *daemon.Daemon) {
	mux.HandleFunc("GET /v1/events", events(d))
	mux.HandleFunc("GET /v1/host", func(w http.ResponseWriter, r *http.Request) {
		h, err := d.Host()
		reply(w, h, err)
	})
	mux.HandleFunc("GET /v1/host/recipients", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, d.Recipients())
	})
	mux.HandleFunc("POST /v1/host/checks", func(w http.ResponseWriter, r *http.Request) {
		res, err := d.Checks()
		reply(w, res, err)
	})
	mux.HandleFunc("GET /v1/samples", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, d.AllSamples())
	})
	mux.HandleFunc("GET /v1/vms/{name}/samples", withVM(func(w http.ResponseWriter, r *http.Request, name string) {
		if _, ok := d.Status(name); !ok {
			writeErr(w, http.StatusNotFound, fmt.Errorf("no VM named %q", name))
			return
		}
		s := d.Samples(name)
		if s == nil {
			s = []apitypes.VMSample{}
		}
		writeJSON(w, http.StatusOK, s)
	}))
	mux.HandleFunc("GET /v1/vms/{name}/console", withVM(console(d)))
	mux.HandleFunc("GET /v1/daemon/logs", func(w http.ResponseWriter, r *http.Request) {
		follow, _ := strconv.ParseBool(r.URL.Query().Get("follow"))
		streamFile(w, r, d.DaemonLog(), follow)
	})
	mux.HandleFunc("GET /v1/vms/{name}/logs", withVM(func(w http.ResponseWriter, r *http.Request, name string) {
		follow, _ := strconv.ParseBool(r.URL.Query().Get("follow"))
		streamFile(w, r, d.ConsoleLog(name), follow)
	}))
}
