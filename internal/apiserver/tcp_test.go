package apiserver

import (
	"net/http"
	"strings"
	"testing"

	"microvm.dev/microvm/internal/api"
	"microvm.dev/microvm/internal/testutil"
	"microvm.dev/microvm/internal/webui"
)

// The optional TCP API: TLS only, and only with the bearer token.
func TestTCPAPIRequiresTLSAndToken(t *testing.T) {
	dir := t.TempDir()
	cert, key := testutil.SelfSignedCert(t, dir)
	ln, err := ListenTLS("127.0.0.1:0", cert, key)
	if err != nil {
		t.Fatal(err)
	}
	token := "a-long-enough-secret-token"
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, []string{}) })
	srv := &http.Server{Handler: webui.Handler(h, []byte(token), true)}
	go srv.Serve(ln)
	defer srv.Close()
	url := "https://" + ln.Addr().String()

	c, err := api.NewRemoteClient(url, token, cert)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	if err := c.Do("GET", "/v1/vms", nil, &out); err != nil {
		t.Errorf("with the token and the CA: %v", err)
	}
	for name, tok := range map[string]string{"no token": "", "wrong token": "guess", "prefix of the token": token[:10]} {
		c, _ := api.NewRemoteClient(url, tok, cert)
		var se *api.StatusError
		if err := c.Do("GET", "/v1/vms", nil, nil); err == nil || !asStatus(err, &se) || se.Code != http.StatusUnauthorized {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Without the CA the server is not trusted.
	c, _ = api.NewRemoteClient(url, token, "")
	if err := c.Do("GET", "/v1/vms", nil, nil); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("untrusted certificate: %v", err)
	}
	// Plain HTTP is refused.
	if _, err := api.NewRemoteClient("http://"+ln.Addr().String(), token, cert); err == nil {
		t.Error("an http:// API URL was accepted")
	}
	resp, err := http.Get("http://" + ln.Addr().String() + "/v1/vms")
	if err == nil && resp.StatusCode == 200 {
		t.Error("the TCP API answered plain HTTP")
	}
}

func asStatus(err error, se **api.StatusError) bool {
	s, ok := err.(*api.StatusError)
	*se = s
	return ok
}
