package apiserver

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"microvm.dev/microvm/internal/daemon"
	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/testutil"
)

// FuzzAPIRequest sends arbitrary methods, paths, queries and bodies to the
// API of a real daemon (in a namespace of the test's; no microvm-init, so
// no VM can boot): no panic, every answer a known status, every error a
// JSON {"error"} naming the problem.
func FuzzAPIRequest(f *testing.F) {
	testutil.RequireRoot(f)
	ns := testutil.NewNetns(f, "fapi")
	st := f.TempDir()
	d, err := daemon.New(launch.Env{StateDir: st, RunDir: filepath.Join(st, "run"), NetNS: ns.Path, InitDir: filepath.Join(st, "no-init")},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(d.Close)
	h := Handler(d, nil)
	for _, seed := range []struct {
		method uint8
		path   string
		body   string
	}{
		{0, "/v1/vms", ""}, {0, "/v1/vms/a", ""}, {0, "/v1/vms/..%2Fetc", ""}, {1, "/v1/vms/a/start", ""},
		{1, "/v1/apply?file=x.yaml", "vms: { a: { index: 1, autostart: false } }"}, {1, "/v1/apply", "vms: {"},
		{2, "/v1/vms/a?purge=true", ""}, {0, "/v1/vms/a/logs?follow=false", ""}, {1, "/v1/deploy/rollback?generation=-1", ""},
		{0, "/v1/daemon/logs", ""}, {1, "/v1/apply", strings.Repeat("a", 1000)}, {3, "/v1/vms/b", `{"index": 2, "autostart": false}`},
	} {
		f.Add(seed.method, seed.path, []byte(seed.body))
	}
	methods := []string{"GET", "POST", "DELETE", "PUT"}
	f.Fuzz(func(t *testing.T, m uint8, path string, body []byte) {
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \t\r\n\x00") || strings.Contains(path, "follow=t") || strings.Contains(path, "follow=1") {
			return // not a request line a client can send; following logs never ends
		}
		req, err := http.NewRequest(methods[int(m)%len(methods)], "http://microvm"+path, bytes.NewReader(body))
		if err != nil {
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case 200, 202, 301, 307, 400, 404, 405, 409, 413, 422, 500:
		default:
			t.Fatalf("%s %s: status %d", req.Method, path, rec.Code)
		}
		if rec.Code >= 400 && rec.Code != 404 && rec.Code != 405 && strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
			var e map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
				t.Fatalf("%s %s: %d with a body that is not JSON: %q", req.Method, path, rec.Code, rec.Body.String())
			}
		}
	})
}
