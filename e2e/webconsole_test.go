package e2e

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/testutil"
)

// UINodeModules is where scripts/test.sh installs the browser tests' npm
// packages (e2e/ui/package.json): outside the checkout, shared by runs.
const UINodeModules = "/var/cache/microvm/ui-tests"

// ArtifactsEnv names the directory the browser test keeps its
// screenshots in (default $TMPDIR/microvm-artifacts).
const ArtifactsEnv = "MICROVM_TEST_ARTIFACTS"

// The web console in a real browser (Debian's chromium driven by
// Playwright, e2e/ui/console.test.mjs) against a real GitOps daemon with
// two VMs under TCG and two generations, the console on a loopback
// listener and on the TLS API listener: no token is refused, the fleet lists the VMs, the serial
// console shows the prompt and a typed command's output, a rollback from
// the deploys page takes effect, stopping b from the fleet page stops it
// (the CLI sees it) and its row changes without a reload, the host page
// shows bridges, images, the firewall and the doctor's and verify's checks,
// the fleet fits a phone, and over TLS the session cookie is Secure. The
// fleet and a VM's page draw its host memory, CPU and network from the
// daemon's samples (every 2 s here).
func TestWebConsole(t *testing.T) {
	requireGuestEnv(t)
	testutil.RequireCommand(t, "git")
	node := testutil.RequireCommand(t, "node")
	testutil.RequireCommand(t, "chromium")
	if _, err := os.Stat(filepath.Join(UINodeModules, "node_modules", "playwright-core")); err != nil {
		t.Fatalf("playwright-core is not installed in %s (scripts/test.sh installs it): %v", UINodeModules, err)
	}
	repo := newGitRepo(t)
	l := newDaemonLab(t, "web")
	fleet := func(mem string) string {
		return "defaults: { vcpu: 1, stopTimeout: 20s }\nvms:\n  a: { index: 1, memory: 256M }\n  b: { index: 2, memory: " + mem + " }\n"
	}
	first := repo.push(fleet("256M"), "first: a and b")
	token := "console-test-token-0123456789"
	tokenFile := filepath.Join(l.state, "api.token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr, tlsAddr := testutil.FreeAddr(t), testutil.FreeAddr(t)
	cert, key := testutil.SelfSignedCert(t, l.state)
	l.startDaemon("", "--git-url", repo.remote, "--git-interval", "1h", "--health-timeout", "90s", "--api-token-file", tokenFile, "--ui-listen", addr, "--sample-every", "2s",
		"--api-listen", tlsAddr, "--api-tls-cert", cert, "--api-tls-key", key)
	l.waitGeneration(1, 4*time.Minute)
	l.waitFor("a and b running", 4*time.Minute, allRunning("a", "b"))
	repo.push(fleet("288M"), "second: b gets more memory")
	l.waitGeneration(2, 4*time.Minute)
	l.waitFor("b on 288M", 4*time.Minute, func(vms map[string]apitypes.VMStatus) bool {
		return allRunning("a", "b")(vms) && vms["b"].Spec.Memory.String() == "288M"
	})

	shots := os.Getenv(ArtifactsEnv)
	if shots == "" {
		shots = filepath.Join(os.TempDir(), "microvm-artifacts")
	}
	shots = filepath.Join(shots, "webconsole")
	cmd := exec.Command(node, "ui/console.test.mjs")
	cmd.Env = append(os.Environ(), "UI_URL=http://"+addr, "UI_TLS_URL=https://"+tlsAddr, "UI_TOKEN="+token, "UI_NODE_MODULES="+UINodeModules, "FIRST_COMMIT="+first, "SCREENSHOTS="+shots)
	out, err := cmd.CombinedOutput()
	t.Logf("browser test (screenshots in %s):\n%s", shots, out)
	if err != nil || !strings.HasSuffix(strings.TrimSpace(string(out)), "ok") {
		t.Fatalf("the browser test failed: %v", err)
	}

	// What the page did, as the CLI sees it.
	vms := l.list()
	if vms["b"].State != apitypes.Stopped || vms["a"].State != apitypes.Running {
		t.Errorf("after the page stopped b: a %s, b %s", vms["a"].State, vms["b"].State)
	}
	if st := l.deployStatus(); st.Current == nil || st.Current.Commit.Hash != first || vms["b"].Spec.Memory.String() != "256M" {
		t.Errorf("after the rollback from the page: current %+v, b on %s", st.Current, vms["b"].Spec.Memory)
	}
	// A request without the token is refused on the API the page uses.
	if code := statusOf(t, "http://"+addr+"/v1/vms"); code != 401 {
		t.Errorf("GET /v1/vms without the token: %d", code)
	}
}

func statusOf(t *testing.T, url string) int {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	res.Body.Close()
	return res.StatusCode
}
