// Package apiserver serves the daemon's HTTP+JSON API, on a unix socket
// and, with TLS and a token, on TCP. Bodies are the wire types of
// internal/apitypes; errors are JSON {"error": "..."} with a fitting
// status, and an apply with problems answers 422 with the problems. The
// client is internal/api.
package apiserver

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/daemon"
	"microvm.dev/microvm/internal/deploy"
	"microvm.dev/microvm/internal/plan"
	"microvm.dev/microvm/internal/snapshot"
)

// DefaultSocket is where the daemon's API listens by default.
// SocketGroup is the group that may use the API socket (besides root).
const SocketGroup = "microvm"

// MaxBody bounds request bodies (a config file).
const MaxBody = 4 << 20

var (
	nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)
	volRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,19}$`)
	snapRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,19}@[0-9]{8}T[0-9]{6}\.[0-9]{3}Z$`)
)

// Handler serves d's API; dep is the GitOps loop (nil when the daemon
// applies a file instead, and the deploy endpoints answer 409).
func Handler(d *daemon.Daemon, dep *deploy.Engine) http.Handler {
	mux := http.NewServeMux()
	deployRoutes(mux, dep)
	sup := d.Supervisor()
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
		// The boot goes on if the client goes away (as the restart policy's
		// boots do); stopping the VM cancels it.
		return sup.Start(context.Background(), vm)
	}
	mux.HandleFunc("POST /v1/vms/{name}/start", action(start))
	mux.HandleFunc("POST /v1/vms/{name}/stop", action(d.Stop))
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
	mux.HandleFunc("DELETE /v1/vms/{name}", withVM(func(w http.ResponseWriter, r *http.Request, name string) {
		purge, _ := strconv.ParseBool(r.URL.Query().Get("purge"))
		if err := d.Remove(name, purge); err != nil {
			writeErr(w, http.StatusConflict, err)
			return
		}
		writeJSON(w, http.StatusOK, apitypes.RemoveResponse{Removed: name, Purged: purge})
	}))
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
	mux.HandleFunc("POST /v1/vms/{name}/snapshots/restore", withVM(func(w http.ResponseWriter, r *http.Request, name string) {
		snap := r.URL.Query().Get("snapshot")
		if !snapRE.MatchString(snap) {
			writeErr(w, http.StatusBadRequest, fmt.Errorf("%q is not a snapshot name (volume@time, from microvm volume snapshots)", snap))
			return
		}
		before, err := d.Restore(name, snap)
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
	return mux
}

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

// reply answers v, or err: 409 before any file is applied, 500 otherwise.
func reply(w http.ResponseWriter, v any, err error) {
	switch {
	case errors.Is(err, daemon.ErrNoFile):
		writeErr(w, http.StatusConflict, err)
	case err != nil:
		writeErr(w, http.StatusInternalServerError, err)
	default:
		writeJSON(w, http.StatusOK, v)
	}
}

func withVM(h func(http.ResponseWriter, *http.Request, string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if !nameRE.MatchString(name) {
			writeErr(w, http.StatusBadRequest, fmt.Errorf("%q is not a VM name", name))
			return
		}
		h(w, r, name)
	}
}

// streamFile copies a log file, and with follow keeps sending what is
// appended until the client goes away.
func streamFile(w http.ResponseWriter, r *http.Request, path string, follow bool) {
	f, err := os.Open(path)
	if err != nil {
		writeErr(w, http.StatusNotFound, fmt.Errorf("no log: %w", err))
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fl, _ := w.(http.Flusher)
	buf := make([]byte, 32<<10)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			w.Write(buf[:n])
			if fl != nil {
				fl.Flush()
			}
		}
		if err == io.EOF {
			if !follow {
				return
			}
			// A log rotated by copy and truncate starts over.
			if pos, perr := f.Seek(0, io.SeekCurrent); perr == nil {
				if fi, serr := os.Stat(path); serr == nil && fi.Size() < pos {
					f.Seek(0, io.SeekStart)
				}
			}
			select {
			case <-r.Context().Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if err != nil {
			return
		}
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeErr(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, apitypes.ErrorResponse{Error: err.Error()})
}

// Listen opens the API socket (mode 0660; group microvm when that group
// exists), replacing a stale socket but refusing one a live daemon serves.
func Listen(socket string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(socket), 0o755); err != nil {
		return nil, err
	}
	if c, err := net.DialTimeout("unix", socket, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("a daemon is already listening on %s", socket)
	}
	os.Remove(socket)
	ln, err := net.Listen("unix", socket)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", socket, err)
	}
	if err := os.Chmod(socket, 0o660); err != nil {
		ln.Close()
		return nil, err
	}
	if g, err := user.LookupGroup(SocketGroup); err == nil {
		if gid, err := strconv.Atoi(g.Gid); err == nil {
			os.Chown(socket, 0, gid)
		}
	}
	return ln, nil
}

// Client talks to a daemon.
// Unusable returns a client whose every request fails with err.
// ErrNoDaemon says nothing listens on the socket.
// NewClient returns a client for the daemon on socket.
// NewRemoteClient returns a client for a daemon's TCP API at baseURL
// (https://host:port), sending token as a bearer token and trusting the
// CA certificates in caFile (the system's when empty).
// ListenTLS opens the TCP API on addr with the certificate and key.
func ListenTLS(addr, certFile, keyFile string) (net.Listener, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("API TLS: %w", err)
	}
	ln, err := tls.Listen("tcp", addr, &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}})
	if err != nil {
		return nil, fmt.Errorf("API listen on %s: %w", addr, err)
	}
	return ln, nil
}

// Do sends a request and decodes a JSON answer into out; a non-2xx answer
// is an error carrying the daemon's message (out is still filled when the
// answer has a body of that shape, e.g. apply problems).
// DoContext is Do, given up when ctx ends.
// StatusError is a daemon's refusal.
// Stream copies a streamed answer (logs) to w.
// StreamContext is Stream, given up when ctx ends.
// VMs lists the VMs.
