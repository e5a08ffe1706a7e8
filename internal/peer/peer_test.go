package peer

import (
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Two daemons that name each other's keys talk; a client the server does
// not name, or a server that is not the key the client expects, is
// refused at the handshake. An identity is made once and then kept.
func TestMutualKeys(t *testing.T) {
	dir := t.TempDir()
	a, err := Load(filepath.Join(dir, "a"))
	if err != nil {
		t.Fatal(err)
	}
	if again, err := Load(filepath.Join(dir, "a")); err != nil || again.Key != a.Key {
		t.Fatalf("loading again: %v, key %s, want %s", err, again.Key, a.Key)
	}
	b, _ := Load(filepath.Join(dir, "b"))
	stranger, _ := Load(filepath.Join(dir, "c"))
	if !strings.HasPrefix(a.Key, "sha256:") || len(a.Key) != 71 || a.Key == b.Key {
		t.Fatalf("keys %s, %s", a.Key, b.Key)
	}
	trust := func(key string) (string, bool) {
		if key == a.Key {
			return "a", true
		}
		return "", false
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, _ := PeerOf(r, trust)
		io.WriteString(w, "hello "+name)
	}))
	srv.TLS = b.ServerTLS(trust)
	srv.StartTLS()
	defer srv.Close()

	resp, err := a.Client(b.Key, 5*time.Second).Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello a" {
		t.Errorf("the server saw %q, want the client named a", body)
	}
	if _, err := stranger.Client(b.Key, 5*time.Second).Get(srv.URL); err == nil {
		t.Error("a client the server does not name was served")
	}
	if _, err := a.Client(stranger.Key, 5*time.Second).Get(srv.URL); err == nil || !strings.Contains(err.Error(), "not one the file's peers name") {
		t.Errorf("a server with another key than expected: %v", err)
	}
}
