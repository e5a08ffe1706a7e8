package testutil

import (
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
)

// APIRequest is one request a FakeAPI received.
type APIRequest struct {
	Method, Path, Body string
}

// FakeAPI is an HTTP server on a unix socket standing in for a VMM's REST
// API (cloud-hypervisor, Firecracker) where the VMM itself cannot run. It
// answers "METHOD /path" with the canned JSON body in Routes (204 when the
// body is empty, 404 for an unknown route) and records every request.
type FakeAPI struct {
	// Socket is the unix socket it listens on.
	Socket string
	mu     sync.Mutex
	reqs   []APIRequest
}

// NewFakeAPI serves routes ("PUT /api/v1/vm.power-button" → reply body)
// until the test ends.
func NewFakeAPI(t testing.TB, routes map[string]string) *FakeAPI {
	t.Helper()
	f := &FakeAPI{Socket: filepath.Join(t.TempDir(), "api.sock")}
	ln, err := net.Listen("unix", f.Socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.reqs = append(f.reqs, APIRequest{r.Method, r.URL.Path, string(b)})
		f.mu.Unlock()
		reply, ok := routes[r.Method+" "+r.URL.Path]
		switch {
		case !ok:
			http.Error(w, `{"error":"unknown route"}`, http.StatusNotFound)
		case reply == "":
			w.WriteHeader(http.StatusNoContent)
		default:
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, reply)
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return f
}

// Requests are the requests received so far.
func (f *FakeAPI) Requests() []APIRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]APIRequest(nil), f.reqs...)
}
