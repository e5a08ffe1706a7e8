// Package apiserver serves the daemon's HTTP+JSON API, on a unix socket
// and, with TLS and a token, on TCP. Bodies are the wire types of
// internal/apitypes; errors are JSON {"error": "..."} with a fitting
// status, and an apply with problems answers 422 with the problems. The
// client is internal/api.
package apiserver

import (
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
// applies a file instead, and the deploy endpoints answer 409). The
// routes are grouped by resource: the VMs and the file (vms.go), a VM's
// lifecycle (lifecycle.go), its volumes' snapshots (snapshots.go), moves
// between hosts (peers.go, with the peer listener's own handler), the
// host, the event stream, consoles and logs (host.go), the GitOps loop
// (deploy.go).
func Handler(d *daemon.Daemon, dep *deploy.Engine) http.Handler {
	mux := http.NewServeMux()
	vmRoutes(mux, d)
	lifecycleRoutes(mux, d)
	snapshotRoutes(mux, d)
	moveRoutes(mux, d)
	hostRoutes(mux, d)
	deployRoutes(mux, dep)
	return mux
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
