package deploy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func sign(secret, body string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(body))
	return hex.EncodeToString(m.Sum(nil))
}

func TestAuthentic(t *testing.T) {
	secret, body := "0123456789abcdef-secret", `{"ref":"refs/heads/main"}`
	good := sign(secret, body)
	for name, c := range map[string]struct {
		header, value string
		want          bool
	}{
		"github":            {"X-Hub-Signature-256", "sha256=" + good, true},
		"github no prefix":  {"X-Hub-Signature-256", good, false},
		"github wrong":      {"X-Hub-Signature-256", "sha256=" + sign("other-secret-xyz", body), false},
		"gitea":             {"X-Gitea-Signature", good, true},
		"forgejo":           {"X-Forgejo-Signature", good, true},
		"gitlab":            {"X-Gitlab-Token", secret, true},
		"gitlab wrong":      {"X-Gitlab-Token", "guess", false},
		"no signature":      {"X-Other", "x", false},
		"github not hex":    {"X-Hub-Signature-256", "sha256=zz", false},
		"body of other req": {"X-Hub-Signature-256", "sha256=" + sign(secret, body+" "), false},
	} {
		h := http.Header{}
		h.Set(c.header, c.value)
		if got := Authentic([]byte(secret), h, []byte(body)); got != c.want {
			t.Errorf("%s: %v, want %v", name, got, c.want)
		}
	}
	if Authentic(nil, http.Header{"X-Gitlab-Token": {""}}, nil) {
		t.Error("an empty secret authenticates")
	}
}

func TestWebhookTriggers(t *testing.T) {
	e := &Engine{trigger: make(chan struct{}, 1), log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	secret := "0123456789abcdef-secret"
	srv := httptest.NewServer(e.Webhook([]byte(secret)))
	defer srv.Close()
	post := func(sig string) int {
		req, _ := http.NewRequest("POST", srv.URL, strings.NewReader("{}"))
		if sig != "" {
			req.Header.Set("X-Hub-Signature-256", "sha256="+sig)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(""); code != http.StatusUnauthorized || len(e.trigger) != 0 {
		t.Errorf("unsigned: %d, triggered %d", code, len(e.trigger))
	}
	if code := post(sign(secret, "{}")); code != http.StatusAccepted || len(e.trigger) != 1 {
		t.Errorf("signed: %d, triggered %d", code, len(e.trigger))
	}
	resp, _ := http.Get(srv.URL)
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", resp.StatusCode)
	}
	big := strings.Repeat("x", maxWebhookBody+1)
	req, _ := http.NewRequest("POST", srv.URL, strings.NewReader(big))
	req.Header.Set("X-Hub-Signature-256", "sha256="+sign(secret, big))
	if resp, _ := http.DefaultClient.Do(req); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("huge body: %d", resp.StatusCode)
	}
}
