package deploy

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
)

// maxWebhookBody bounds a webhook's body (forges send a few hundred KB at most).
const maxWebhookBody = 1 << 20

// Webhook is the handler forges call on a push: it checks the request is
// signed with secret and triggers a fetch. It accepts GitHub's and
// Forgejo/Gitea's HMAC-SHA256 of the body (X-Hub-Signature-256:
// sha256=<hex>, X-Gitea-Signature / X-Forgejo-Signature: <hex>) and
// GitLab's shared token (X-Gitlab-Token). Anything else is 401 and
// triggers nothing.
func (e *Engine) Webhook(secret []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, `{"error":"POST only"}`, http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWebhookBody))
		if err != nil {
			http.Error(w, `{"error":"body too large"}`, http.StatusRequestEntityTooLarge)
			return
		}
		if !Authentic(secret, r.Header, body) {
			e.log.Warn("webhook with a bad or missing signature", "remote", r.RemoteAddr)
			http.Error(w, `{"error":"bad or missing signature"}`, http.StatusUnauthorized)
			return
		}
		e.Trigger()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{"triggered":true}`+"\n")
	})
}

// Authentic reports whether a webhook request carries a valid signature of
// body (or the shared token) for secret.
func Authentic(secret []byte, h http.Header, body []byte) bool {
	if len(secret) == 0 {
		return false
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	want := mac.Sum(nil)
	check := func(hexSig string) bool {
		got, err := hex.DecodeString(strings.TrimSpace(hexSig))
		return err == nil && hmac.Equal(got, want)
	}
	if s := h.Get("X-Hub-Signature-256"); s != "" {
		return strings.HasPrefix(s, "sha256=") && check(strings.TrimPrefix(s, "sha256="))
	}
	for _, k := range []string{"X-Gitea-Signature", "X-Forgejo-Signature"} {
		if s := h.Get(k); s != "" {
			return check(s)
		}
	}
	if t := h.Get("X-Gitlab-Token"); t != "" {
		return subtle.ConstantTimeCompare([]byte(t), secret) == 1
	}
	return false
}
