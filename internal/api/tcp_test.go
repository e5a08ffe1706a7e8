package api

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"microvm.dev/microvm/internal/webui"
)

// selfSigned writes a certificate for 127.0.0.1 and its key.
func selfSigned(t *testing.T, dir string) (cert, key string) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "microvm"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(k)
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return cert, key
}

// The optional TCP API: TLS only, and only with the bearer token.
func TestTCPAPIRequiresTLSAndToken(t *testing.T) {
	dir := t.TempDir()
	cert, key := selfSigned(t, dir)
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

	c, err := NewRemoteClient(url, token, cert)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	if err := c.Do("GET", "/v1/vms", nil, &out); err != nil {
		t.Errorf("with the token and the CA: %v", err)
	}
	for name, tok := range map[string]string{"no token": "", "wrong token": "guess", "prefix of the token": token[:10]} {
		c, _ := NewRemoteClient(url, tok, cert)
		var se *StatusError
		if err := c.Do("GET", "/v1/vms", nil, nil); err == nil || !asStatus(err, &se) || se.Code != http.StatusUnauthorized {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Without the CA the server is not trusted.
	c, _ = NewRemoteClient(url, token, "")
	if err := c.Do("GET", "/v1/vms", nil, nil); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("untrusted certificate: %v", err)
	}
	// Plain HTTP is refused.
	if _, err := NewRemoteClient("http://"+ln.Addr().String(), token, cert); err == nil {
		t.Error("an http:// API URL was accepted")
	}
	resp, err := http.Get("http://" + ln.Addr().String() + "/v1/vms")
	if err == nil && resp.StatusCode == 200 {
		t.Error("the TCP API answered plain HTTP")
	}
}

func asStatus(err error, se **StatusError) bool {
	s, ok := err.(*StatusError)
	*se = s
	return ok
}
