// Package webui is the fleet's web console, served by the daemon itself:
// pages (plain JavaScript modules and xterm.js, embedded in the binary, no
// build step and nothing remote) under /ui/, talking to the daemon's own
// API. Every API request needs the token: as a bearer token (the command
// line) or as the session cookie a login with the token sets (the page).
// A request that changes something with the cookie must also come from
// the console's own origin and carry its header, so another site cannot
// make the browser send one; the cookie is SameSite=Strict and HttpOnly.
package webui

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
	"time"
)

//go:embed assets
var assets embed.FS

// CookieName is the session cookie.
const CookieName = "microvm_session"

// ActionHeader must accompany every cookie-authenticated request that
// changes something (the pages send it; a cross-site form cannot).
const ActionHeader = "X-Microvm-Console"

// CSP is the pages' Content-Security-Policy: scripts and connections to
// the daemon only, no plugins, frames or remote anything. Styles allow
// inline ones because xterm.js sizes its terminal with <style> elements
// it writes itself.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Handler serves the console under /ui/ and api (the daemon's API, which
// the pages call) for everything else, admitting only requests with
// token; secure marks the cookie for HTTPS only.
func Handler(api http.Handler, token []byte, secure bool) http.Handler {
	static, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded tree is part of the binary
	}
	session := sessionValue(token)
	files := http.FileServerFS(static)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/", http.StatusFound)
	})
	mux.Handle("GET /ui/", http.StripPrefix("/ui", headers(files)))
	mux.HandleFunc("POST /ui/login", func(w http.ResponseWriter, r *http.Request) {
		if !sameOrigin(r) {
			http.Error(w, "cross-origin login refused", http.StatusForbidden)
			return
		}
		var in struct{ Token string }
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&in); err != nil ||
			len(token) == 0 || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(in.Token)), token) != 1 {
			time.Sleep(200 * time.Millisecond) // no fast guessing
			http.Error(w, "that is not the daemon's API token", http.StatusUnauthorized)
			return
		}
		http.SetCookie(w, &http.Cookie{Name: CookieName, Value: session, Path: "/", HttpOnly: true, Secure: secure, SameSite: http.SameSiteStrictMode})
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /ui/logout", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: secure, SameSite: http.SameSiteStrictMode})
		w.WriteHeader(http.StatusNoContent)
	})
	mux.Handle("/", authorize(api, token, session))
	return mux
}

// authorize admits a request with the bearer token, or with the session
// cookie (then a change must also be same-origin and carry ActionHeader).
func authorize(h http.Handler, token []byte, session string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && len(token) > 0 && subtle.ConstantTimeCompare([]byte(got), token) == 1 {
			h.ServeHTTP(w, r)
			return
		}
		c, err := r.Cookie(CookieName)
		if err != nil || len(token) == 0 || subtle.ConstantTimeCompare([]byte(c.Value), []byte(session)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="microvm"`)
			writeErr(w, http.StatusUnauthorized, "a valid bearer token (or the console's session) is required")
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && (r.Header.Get(ActionHeader) == "" || !sameOrigin(r)) {
			writeErr(w, http.StatusForbidden, "a change from the console must come from its own page")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// sameOrigin says the request's Origin (which browsers send with every
// POST and websocket) names the host it was sent to; a request without
// one is no browser's cross-site request.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return r.Header.Get("Sec-Fetch-Site") == "" || r.Header.Get("Sec-Fetch-Site") == "same-origin"
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

// headers sets the pages' security headers.
func headers(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", CSP)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}

// sessionValue is the cookie's value for token: an HMAC of it, so the
// cookie never holds the token itself.
func sessionValue(token []byte) string {
	m := hmac.New(sha256.New, token)
	m.Write([]byte("microvm web console session v1"))
	return hex.EncodeToString(m.Sum(nil))
}

func writeErr(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
