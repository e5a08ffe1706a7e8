package apiserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"microvm.dev/microvm/internal/api"
	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/daemon"
	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/testutil"
)

// serve runs the API of a daemon with no VMs, in a namespace of the test's,
// and returns a client of it.
func serve(t *testing.T) *api.Client {
	t.Helper()
	c, _ := serveSocket(t)
	return c
}

// serveSocket is serve, also returning the API's socket.
func serveSocket(t *testing.T) (*api.Client, string) {
	t.Helper()
	ns := testutil.NewNetns(t, "api")
	st := t.TempDir()
	d, err := daemon.New(launch.Env{StateDir: st, RunDir: filepath.Join(st, "run"), NetNS: ns.Path}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	sock := filepath.Join(st, "api.sock")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: Handler(d, nil), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	if _, err := Listen(sock); err == nil || !strings.Contains(err.Error(), "already listening") {
		t.Errorf("a second daemon on the same socket: %v", err)
	}
	return api.NewClient(sock), sock
}

func wantStatus(t *testing.T, err error, code int, msg string) {
	t.Helper()
	var se *api.StatusError
	if !errors.As(err, &se) || se.Code != code || !strings.Contains(se.Message, msg) {
		t.Errorf("got %v, want %d %q", err, code, msg)
	}
}

func TestAPIRefusals(t *testing.T) {
	c := serve(t)
	vms, err := c.VMs()
	if err != nil || len(vms) != 0 {
		t.Fatalf("list: %v, %v", vms, err)
	}
	wantStatus(t, c.Do("GET", "/v1/vms/..%2Fetc", nil, nil), http.StatusBadRequest, "is not a VM name")
	wantStatus(t, c.Do("GET", "/v1/vms/Bad_Name", nil, nil), http.StatusBadRequest, "is not a VM name")
	wantStatus(t, c.Do("GET", "/v1/vms/ghost", nil, nil), http.StatusNotFound, `no VM named "ghost"`)
	wantStatus(t, c.Do("POST", "/v1/vms/ghost/start", nil, nil), http.StatusConflict, "not in the applied file")
	wantStatus(t, c.Do("POST", "/v1/vms/ghost/restart", nil, nil), http.StatusConflict, `no VM named "ghost"`)
	wantStatus(t, c.Do("POST", "/v1/vms/ghost/stop", nil, nil), http.StatusConflict, `no VM named "ghost"`)
	wantStatus(t, c.Stream("/v1/vms/ghost/logs", io.Discard), http.StatusNotFound, "no log")
	for _, ep := range []struct{ method, path string }{{"GET", "/v1/deploy"}, {"GET", "/v1/deploy/history"}, {"POST", "/v1/deploy/trigger"},
		{"POST", "/v1/deploy/rollback"}, {"POST", "/v1/deploy/suspend"}, {"POST", "/v1/deploy/resume"}} {
		wantStatus(t, c.Do(ep.method, ep.path, nil, nil), http.StatusConflict, "not deploying from git")
	}

	var res daemon.ApplyResult
	err = c.Do("POST", "/v1/apply?file=bad.yaml", strings.NewReader("vms: { a: { index: 1, memory: 1M, bogus: 2 } }"), &res)
	wantStatus(t, err, http.StatusUnprocessableEntity, "")
	if len(res.Problems) != 2 || res.Problems[0].File != "bad.yaml" {
		t.Errorf("problems = %+v", res.Problems)
	}
	err = c.Do("POST", "/v1/apply", bytes.NewReader(make([]byte, MaxBody+1)), nil)
	wantStatus(t, err, http.StatusRequestEntityTooLarge, "")
	res = daemon.ApplyResult{}
	err = c.Do("POST", "/v1/apply", strings.NewReader("vms: { a: { index: 1, autostart: false } }"), &res)
	if err != nil || len(res.VMs) != 1 || res.VMs[0].Action != "defined" {
		t.Fatalf("apply without autostart: %+v, %v", res, err)
	}
	wantStatus(t, c.Do("DELETE", "/v1/vms/a", nil, nil), http.StatusConflict, "is in the applied file")

	// One VM put on its own: refused with its problems, refused for a VM
	// of the file, defined, removed.
	var put apitypes.PutResponse
	wantStatus(t, c.Do("PUT", "/v1/vms/b", strings.NewReader(`{"index": 2, "memory": "lots"}`), &put), http.StatusUnprocessableEntity, "")
	if put.PutResult == nil || len(put.Problems) != 1 || put.Problems[0].Path != "vms.b.memory" {
		t.Errorf("put problems = %+v", put.PutResult)
	}
	wantStatus(t, c.Do("PUT", "/v1/vms/a", strings.NewReader(`{"index": 1}`), nil), http.StatusConflict, "is in the applied file")
	put = apitypes.PutResponse{}
	if err := c.Do("PUT", "/v1/vms/b", strings.NewReader("index: 2\nautostart: false\n"), &put); err != nil || put.VM.Action != "defined" || put.Status == nil || put.Status.Name != "b" {
		t.Fatalf("put b: %v %+v", err, put)
	}
	if err := c.Do("DELETE", "/v1/vms/b", nil, nil); err != nil {
		t.Errorf("delete b: %v", err)
	}
	wantStatus(t, c.Do("GET", "/v1/vms/b", nil, nil), http.StatusNotFound, "")
	var raw json.RawMessage
	wantStatus(t, c.Do("POST", "/v1/nowhere", nil, &raw), http.StatusNotFound, "")
}
