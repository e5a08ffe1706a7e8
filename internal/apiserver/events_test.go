package apiserver

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/supervisor"
)

// The event stream sends the VM list at once and again when an apply
// defines another VM; the console of a VM that
// does not run is refused, saying so; the host view has the applied
// file's bridges and ruleset.
func TestEventsConsoleHost(t *testing.T) {
	c, sock := serveSocket(t)
	if err := c.Do("POST", "/v1/apply", strings.NewReader("vms: { a: { index: 1, autostart: false } }"), nil); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://microvm/v1/events", nil)
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("content type %q", ct)
	}
	r := bufio.NewReader(res.Body)
	event, _ := r.ReadString('\n')
	data, _ := r.ReadString('\n')
	var vms []supervisor.Status
	if event != "event: vms\n" || json.Unmarshal([]byte(strings.TrimPrefix(data, "data: ")), &vms) != nil || len(vms) != 1 || vms[0].Name != "a" {
		t.Errorf("first event: %q %q", event, data)
	}
	// A file that defines another VM (never started) is news too.
	if err := c.Do("POST", "/v1/apply", strings.NewReader("vms: { a: { index: 1, autostart: false }, b: { index: 2, autostart: false } }"), nil); err != nil {
		t.Fatal(err)
	}
	r.ReadString('\n') // the blank line ending the first event
	event, _ = r.ReadString('\n')
	data, _ = r.ReadString('\n')
	if event != "event: vms\n" || json.Unmarshal([]byte(strings.TrimPrefix(data, "data: ")), &vms) != nil || len(vms) != 2 {
		t.Errorf("after defining b: %q %q", event, data)
	}
	wantStatus(t, c.Do("GET", "/v1/vms/a/console", nil, nil), http.StatusConflict, "only a running VM has a console")
	var host struct {
		Firewall string
		Network  struct{ Links []struct{ Name string } }
	}
	if err := c.Do("GET", "/v1/host", nil, &host); err != nil || !strings.Contains(host.Firewall, "table inet microvm") || len(host.Network.Links) == 0 {
		t.Errorf("host: %v %+v", err, host)
	}
}

// A secret's value never leaves the API, and the supervisor's spec is not
// touched by the redaction.
func TestRedact(t *testing.T) {
	spec := &config.VM{Name: "a", Secrets: []config.Secret{{Path: "/run/x", Age: "-----BEGIN AGE ENCRYPTED FILE-----"}}}
	got := redact(supervisor.Status{Name: "a", Spec: spec})
	if got.Spec.Secrets[0].Age != Redacted || got.Spec.Secrets[0].Path != "/run/x" || spec.Secrets[0].Age == Redacted {
		t.Errorf("redacted %+v, original %+v", got.Spec.Secrets, spec.Secrets)
	}
}
