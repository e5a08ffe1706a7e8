package apiserver

import (
	"net/http"
	"strconv"

	"microvm.dev/microvm/internal/daemon"
)

// hostRoutes are the host's view and checks, the event stream, a VM's
// console, and the daemon's and a VM's logs.
func hostRoutes(mux *http.ServeMux, d *daemon.Daemon) {
	mux.HandleFunc("GET /v1/events", events(d))
	mux.HandleFunc("GET /v1/host", func(w http.ResponseWriter, r *http.Request) {
		h, err := d.Host()
		reply(w, h, err)
	})
	mux.HandleFunc("POST /v1/host/checks", func(w http.ResponseWriter, r *http.Request) {
		res, err := d.Checks()
		reply(w, res, err)
	})
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
