package testutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// KubeCache is where KubeBinaries keeps what it builds, one directory per
// version of the tools module.
const KubeCache = "/var/cache/microvm/kube"

// KubePackages are what KubeBinaries builds of tools/kube.
func KubePackages() []string {
	return []string{"./cmd/etcd", "k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes/cmd/kube-controller-manager", "k8s.io/kubernetes/cmd/kube-scheduler", "k8s.io/kubernetes/cmd/kube-proxy", "k8s.io/kubernetes/cmd/kubectl"}
}

// KubeTools are the Kubernetes engine's own binaries, built from the
// k8s.io/kubernetes and etcd modules by the tools module in tools/kube.
type KubeTools struct {
	Etcd, APIServer, ControllerManager, Scheduler, Proxy, Kubectl string
}

// KubeBinaries builds etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, kube-proxy and kubectl once per version of tools/kube
// into KubeCache.
func KubeBinaries(t testing.TB) KubeTools {
	t.Helper()
	dir := BuildTools(t, "kube", KubeCache, KubePackages()...)
	return KubeTools{Etcd: filepath.Join(dir, "etcd"), APIServer: filepath.Join(dir, "kube-apiserver"), ControllerManager: filepath.Join(dir, "kube-controller-manager"), Scheduler: filepath.Join(dir, "kube-scheduler"), Proxy: filepath.Join(dir, "kube-proxy"), Kubectl: filepath.Join(dir, "kubectl")}
}

// Kube is a control plane a test started on loopback: etcd, a
// kube-apiserver with RBAC and the Node authorizer, client certificates
// from its own CA, kube-controller-manager (service accounts, the node
// lifecycle: its taints, leases and evictions, garbage collection) and
// kube-scheduler. Everything stops when the test
// ends.
type Kube struct {
	Tools KubeTools
	// URL is the API server's address.
	URL string
	// CA is the cluster CA's certificate file (it signs the API server's
	// serving certificate and every client certificate).
	CA string
	// Admin is a kubeconfig of a cluster admin (system:masters).
	Admin string
	dir   string
	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
}

// StartKube starts the control plane with its files in a new temporary
// directory and waits for the API server to be ready.
func StartKube(t testing.TB, tools KubeTools) *Kube {
	t.Helper()
	dir := t.TempDir()
	k := &Kube{Tools: tools, dir: dir}
	k.newCA(t)
	apiPort, etcdPort, peerPort := FreePort(t), FreePort(t), FreePort(t)
	k.URL = "https://127.0.0.1:" + strconv.Itoa(apiPort)
	servingCert, servingKey := k.Cert(t, "kube-apiserver", nil, true)
	kubeletCert, kubeletKey := k.Cert(t, "kube-apiserver-kubelet-client", []string{"system:masters"}, false)
	saKey := filepath.Join(dir, "sa.key")
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, saKey, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey))
	k.Admin = k.Kubeconfig(t, "admin", "system:masters")

	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	k.start(t, "etcd", tools.Etcd, "--data-dir", filepath.Join(dir, "etcd"), "--name", "default",
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL, "--initial-cluster", "default="+peerURL,
		"--unsafe-no-fsync", "--log-level", "warn")
	apiserver := k.start(t, "kube-apiserver", tools.APIServer, "--etcd-servers", etcdURL,
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", strconv.Itoa(apiPort),
		"--tls-cert-file", servingCert, "--tls-private-key-file", servingKey, "--client-ca-file", k.CA,
		"--service-account-issuer", "https://kubernetes.default.svc", "--service-account-key-file", saKey,
		"--service-account-signing-key-file", saKey, "--service-cluster-ip-range", ServiceCIDR,
		"--authorization-mode", "Node,RBAC", "--kubelet-client-certificate", kubeletCert, "--kubelet-client-key", kubeletKey,
		"--kubelet-preferred-address-types", "InternalIP", "--endpoint-reconciler-type", "none", "--v", "1")
	k.waitReady(t, apiserver)
	k.start(t, "kube-controller-manager", tools.ControllerManager, "--kubeconfig", k.Kubeconfig(t, "system:kube-controller-manager"),
		"--service-account-private-key-file", saKey, "--root-ca-file", k.CA, "--use-service-account-credentials=true",
		"--secure-port", "0", "--leader-elect=false", "--v", "1")
	k.start(t, "kube-scheduler", tools.Scheduler, "--kubeconfig", k.Kubeconfig(t, "system:kube-scheduler"),
		"--secure-port", "0", "--leader-elect=false", "--v", "1")
	// Pods can be made once the controller manager has made the default
	// namespace's service account.
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(250 * time.Millisecond) {
		if _, err := k.Kubectl("get", "serviceaccount", "default"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kube-controller-manager made no default service account in 2 minutes:\n%s", Tail(k.Log("kube-controller-manager"), 30))
		}
	}
	return k
}

// Kubectl runs kubectl as the admin.
func (k *Kube) Kubectl(args ...string) (string, error) {
	out, err := exec.Command(k.Tools.Kubectl, append([]string{"--kubeconfig", k.Admin}, args...)...).CombinedOutput()
	return string(out), err
}

// Log is a component's log so far (etcd, kube-apiserver, kube-scheduler).
func (k *Kube) Log(name string) string {
	b, _ := os.ReadFile(filepath.Join(k.dir, name+".log"))
	return string(b)
}

// start starts a component; the channel closes when it exits.
func (k *Kube) start(t testing.TB, name, bin string, args ...string) <-chan struct{} {
	t.Helper()
	logf, err := os.Create(filepath.Join(k.dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	logf.Close()
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("%s log (end):\n%s", name, Tail(k.Log(name), 30))
		}
	})
	return exited
}

// waitReady waits for the API server's /readyz as the admin.
func (k *Kube) waitReady(t testing.TB, exited <-chan struct{}) {
	t.Helper()
	c := k.httpClient(t)
	deadline := time.Now().Add(3 * time.Minute)
	for {
		resp, err := c.Get(k.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-exited:
			t.Fatalf("kube-apiserver exited:\n%s", Tail(k.Log("kube-apiserver"), 20))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("kube-apiserver not ready after 3 minutes (%v):\n%s", err, Tail(k.Log("kube-apiserver"), 40))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (k *Kube) httpClient(t testing.TB) *http.Client {
	cert, key := k.Cert(t, "readyz", []string{"system:masters"}, false)
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(k.ca)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}}}
}

// Kubeconfig writes a kubeconfig for user (a client certificate from the
// cluster CA with groups as its organizations) and returns its path.
func (k *Kube) Kubeconfig(t testing.TB, user string, groups ...string) string {
	t.Helper()
	cert, key := k.Cert(t, user, groups, false)
	path := filepath.Join(k.dir, safeName(user)+".kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{ name: test, cluster: { server: %q, certificate-authority: %q } }]
users: [{ name: %q, user: { client-certificate: %q, client-key: %q } }]
contexts: [{ name: test, context: { cluster: test, user: %q } }]
current-context: test
`, k.URL, k.CA, user, cert, key, user)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Cert issues a certificate from the cluster CA: a client certificate for
// cn in groups, or the API server's serving certificate.
func (k *Kube) Cert(t testing.TB, cn string, groups []string, serving bool) (cert, key string) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn, Organization: groups},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if serving {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.96.0.1")}
		tmpl.DNSNames = []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, k.ca, &priv.PublicKey, k.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(k.dir, safeName(cn))
	writePEM(t, base+".crt", "CERTIFICATE", der)
	writePEM(t, base+".key", "EC PRIVATE KEY", kb)
	return base + ".crt", base + ".key"
}

func (k *Kube) newCA(t testing.TB) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "microvm-test-cluster-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	if k.ca, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	k.caKey = priv
	k.CA = filepath.Join(k.dir, "ca.crt")
	writePEM(t, k.CA, "CERTIFICATE", der)
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// safeName is s usable as a file name.
func safeName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			b[i] = '_'
		}
	}
	return string(b)
}

// FreeAddr is a loopback address (127.0.0.1:PORT) that nothing listens on now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// FreePort is the port of a FreeAddr.
func FreePort(t testing.TB) int {
	t.Helper()
	_, port, _ := net.SplitHostPort(FreeAddr(t))
	n, _ := strconv.Atoi(port)
	return n
}

// Tail is the last n lines of s (a trailing newline dropped).
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
