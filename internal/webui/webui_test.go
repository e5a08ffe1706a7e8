package webui

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const token = "a-long-enough-secret-token"

func newServer(t *testing.T) *httptest.Server {
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Method+" "+r.URL.Path)
	})
	srv := httptest.NewServer(Handler(api, []byte(token), false))
	t.Cleanup(srv.Close)
	return srv
}

func do(t *testing.T, srv *httptest.Server, method, path, body string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

// The pages are served with their security headers and without the
// token (they hold no data); every API request needs the token, as a
// bearer token or as the session a login sets; a change with the session
// must come from the console's origin with its header.
func TestAuthAndCSRF(t *testing.T) {
	srv := newServer(t)
	res, body := do(t, srv, "GET", "/ui/", "", nil)
	if res.StatusCode != 200 || !strings.Contains(body, `<script type="module" src="app.js">`) || res.Header.Get("Content-Security-Policy") != CSP || res.Header.Get("X-Frame-Options") != "DENY" {
		t.Fatalf("index: %d %v\n%s", res.StatusCode, res.Header, body)
	}
	for _, p := range []string{"/ui/app.js", "/ui/vendor/xterm.mjs"} {
		if res, _ := do(t, srv, "GET", p, "", nil); res.StatusCode != 200 || !strings.Contains(res.Header.Get("Content-Type"), "javascript") {
			t.Errorf("%s: %d %s", p, res.StatusCode, res.Header.Get("Content-Type"))
		}
	}
	if res, _ := do(t, srv, "GET", "/v1/vms", "", nil); res.StatusCode != 401 {
		t.Errorf("no token: %d", res.StatusCode)
	}
	if res, body := do(t, srv, "POST", "/v1/vms/a/stop", "", map[string]string{"Authorization": "Bearer " + token}); res.StatusCode != 200 || body != "POST /v1/vms/a/stop" {
		t.Errorf("bearer: %d %s", res.StatusCode, body)
	}
	if res, _ := do(t, srv, "POST", "/ui/login", `{"token":"wrong-token-of-some-length"}`, nil); res.StatusCode != 401 || len(res.Cookies()) != 0 {
		t.Errorf("a wrong token logs in: %d", res.StatusCode)
	}
	if res, _ := do(t, srv, "POST", "/ui/login", `{"token":"`+token+`"}`, map[string]string{"Origin": "https://evil.example"}); res.StatusCode != 403 {
		t.Errorf("a cross-origin login: %d", res.StatusCode)
	}
	res, _ = do(t, srv, "POST", "/ui/login", `{"token":"`+token+`"}`, map[string]string{"Origin": srv.URL})
	if res.StatusCode != 204 || len(res.Cookies()) != 1 {
		t.Fatalf("login: %d %v", res.StatusCode, res.Cookies())
	}
	c := res.Cookies()[0]
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || strings.Contains(c.Value, token) {
		t.Errorf("session cookie %+v", c)
	}
	cookie := map[string]string{"Cookie": CookieName + "=" + c.Value}
	if res, body := do(t, srv, "GET", "/v1/vms", "", cookie); res.StatusCode != 200 || body != "GET /v1/vms" {
		t.Errorf("GET with the session: %d %s", res.StatusCode, body)
	}
	if res, _ := do(t, srv, "GET", "/v1/vms", "", map[string]string{"Cookie": CookieName + "=forged"}); res.StatusCode != 401 {
		t.Errorf("a forged session: %d", res.StatusCode)
	}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{"Cookie": cookie["Cookie"]}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	for name, h := range map[string]map[string]string{
		"no header":         with(map[string]string{"Origin": srv.URL}),
		"cross-site origin": with(map[string]string{"Origin": "https://evil.example", ActionHeader: "1"}),
		"cross-site fetch":  with(map[string]string{"Sec-Fetch-Site": "cross-site", ActionHeader: "1"}),
	} {
		if res, _ := do(t, srv, "POST", "/v1/vms/a/stop", "", h); res.StatusCode != 403 {
			t.Errorf("a change with the session, %s: %d", name, res.StatusCode)
		}
	}
	if res, body := do(t, srv, "POST", "/v1/vms/a/stop", "", with(map[string]string{"Origin": srv.URL, ActionHeader: "1"})); res.StatusCode != 200 || body != "POST /v1/vms/a/stop" {
		t.Errorf("a change from the console: %d %s", res.StatusCode, body)
	}
	if res, _ := do(t, srv, "POST", "/ui/logout", "", cookie); res.StatusCode != 204 || len(res.Cookies()) != 1 || res.Cookies()[0].MaxAge >= 0 {
		t.Errorf("logout: %d %v", res.StatusCode, res.Cookies())
	}
}
