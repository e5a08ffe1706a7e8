package testutil

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TailnetCache is where TailnetBinaries keeps what it builds, one
// directory per version of the tools module.
const TailnetCache = "/var/cache/microvm/tailnet"

// TailnetPackages are what TailnetBinaries builds of tools/tailnet.
func TailnetPackages() []string {
	return []string{"./cmd/tailnet-control", "tailscale.com/cmd/tailscaled", "tailscale.com/cmd/tailscale"}
}

// TailnetTools are Tailscale's own binaries, built from the tailscale.com
// module by the tools module in tools/tailnet.
type TailnetTools struct {
	// Control is tailnet-control: Tailscale's test control server and a
	// DERP relay (tools/tailnet/cmd/tailnet-control).
	Control string
	// Tailscaled and Tailscale are the daemon and its command line.
	Tailscaled, Tailscale string
}

// TailnetBinaries builds the tools module's binaries once per version of
// it (its go.mod, go.sum and sources) into TailnetCache and returns them;
// concurrent test binaries wait for one build.
func TailnetBinaries(t testing.TB) TailnetTools {
	t.Helper()
	dir := BuildTools(t, "tailnet", TailnetCache, TailnetPackages()...)
	return TailnetTools{Control: filepath.Join(dir, "tailnet-control"), Tailscaled: filepath.Join(dir, "tailscaled"), Tailscale: filepath.Join(dir, "tailscale")}
}

// BuildTools builds pkgs of the tools module tools/<module> once per
// version of it (its go.mod, go.sum and sources) into a directory of cache
// and returns that directory; concurrent test binaries wait for one build.
func BuildTools(t testing.TB, module, cache string, pkgs ...string) string {
	t.Helper()
	RequireRoot(t)
	dir, took, err := Build(module, cache, pkgs...)
	if err != nil {
		t.Fatal(err)
	}
	if took > 0 {
		t.Logf("built %s from tools/%s in %s (cached in %s)", strings.Join(pkgs, ", "), module, took.Round(time.Second), dir)
	}
	return dir
}

// Build is BuildTools without a test (scripts/test.sh builds the tools
// before the tests start): it returns the directory and how long the
// build took (0 when the cache had it).
func Build(module, cache string, pkgs ...string) (string, time.Duration, error) {
	_, self, _, _ := runtime.Caller(0)
	src := filepath.Join(filepath.Dir(self), "..", "..", "tools", module)
	sum, err := treeHash(src)
	if err != nil {
		return "", 0, fmt.Errorf("the %s tools module: %w", module, err)
	}
	dir := filepath.Join(cache, sum)
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", 0, err
	}
	lock, err := os.OpenFile(filepath.Join(cache, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", 0, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", 0, err
	}
	if _, err := os.Stat(filepath.Join(dir, "done")); err == nil {
		return dir, 0, nil
	}
	start := time.Now()
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), append([]string{"build", "-trimpath", "-ldflags=-s -w", "-o", tmp + "/"}, pkgs...)...)
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=readonly -buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", 0, fmt.Errorf("build tools/%s: %v\n%s", module, err, out)
	}
	if err := os.WriteFile(filepath.Join(tmp, "done"), nil, 0o644); err != nil {
		return "", 0, err
	}
	os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return "", 0, err
	}
	return dir, time.Since(start), nil
}

// treeHash names a version of the tools module by its files' contents.
func treeHash(dir string) (string, error) {
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fmt.Fprintf(h, "%s %d\n", rel, len(b))
		h.Write(b)
		return nil
	})
	return hex.EncodeToString(h.Sum(nil))[:16], err
}

// TailnetControl starts tailnet-control in ns, serving on addr (an address
// of ns, no port; a private one, so that tailscaled never tries the HTTPS
// port 443 a control server on a public address would have) and approving advertised routes inside approve (comma
// separated, as autoApprovers); it returns the control URL. It is stopped
// when the test ends.
func TailnetControl(t testing.TB, tools TailnetTools, ns *Netns, addr, approve string) string {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns.Name, tools.Control, "-listen", addr, "-approve", approve)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	url, ok := strings.CutPrefix(strings.TrimSpace(line), "control ")
	if err != nil || !ok {
		t.Fatalf("tailnet-control did not start: %v %q", err, line)
	}
	return url
}

// TailnetNode is a tailscaled of a test, in a namespace of the test.
type TailnetNode struct {
	Tools  TailnetTools
	NS     *Netns
	Dir    string // its state directory and log
	Socket string // its LocalAPI socket
	Port   int    // its WireGuard UDP port (0: one the kernel picks)
	cmd    *exec.Cmd
}

// tailnetEnv is what every test tailscaled runs with: no logs uploaded,
// no port mapping, no reaching Tailscale's own control server (it panics
// if it tries), the connectivity check answered by the test's control.
func tailnetEnv(controlURL string) []string {
	return []string{
		"TS_NO_LOGS_NO_SUPPORT=true",
		"TS_PANIC_IF_HIT_MAIN_CONTROL=1",
		"TS_DISABLE_PORTMAPPER=1",
		"TS_ASSUME_NETWORK_UP_FOR_TEST=1",
		"TS_NETCHECK_GENERATE_204_URL=" + controlURL + "/generate_204",
	}
}

// StartTailnetNode starts tailscaled in ns with its state in a new
// directory: with a TUN device (tailscale0) unless userspace, in which
// case it uses its userspace network stack (as tsnet does). It is killed
// when the test ends.
func StartTailnetNode(t testing.TB, tools TailnetTools, ns *Netns, controlURL string, userspace bool) *TailnetNode {
	t.Helper()
	n := NewTailnetNode(t, tools, ns)
	n.Start(t, controlURL, userspace)
	return n
}

// NewTailnetNode is a node whose tailscaled is not started yet: its socket
// is known before (Start starts it).
func NewTailnetNode(t testing.TB, tools TailnetTools, ns *Netns) *TailnetNode {
	t.Helper()
	// Short: the socket's path must fit a sockaddr_un.
	dir, err := os.MkdirTemp("", "ts-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return &TailnetNode{Tools: tools, NS: ns, Dir: dir, Socket: filepath.Join(dir, "tailscaled.sock")}
}

// Start (re)starts the node's tailscaled, keeping its state.
func (n *TailnetNode) Start(t testing.TB, controlURL string, userspace bool) {
	t.Helper()
	args := []string{"netns", "exec", n.NS.Name, n.Tools.Tailscaled, "--statedir=" + n.Dir, "--socket=" + n.Socket, "--no-logs-no-support"}
	if userspace {
		args = append(args, "--tun=userspace-networking")
	}
	if n.Port != 0 {
		args = append(args, fmt.Sprintf("--port=%d", n.Port))
	}
	cmd := exec.Command("ip", args...)
	cmd.Env = append(os.Environ(), tailnetEnv(controlURL)...)
	logf, err := os.OpenFile(filepath.Join(n.Dir, "tailscaled.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.cmd = cmd
	t.Cleanup(n.Stop)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := n.CLI("status", "--json"); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("tailscaled did not answer on %s; its log:\n%s", n.Socket, n.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop kills the node's tailscaled (its state stays).
func (n *TailnetNode) Stop() {
	if n.cmd != nil && n.cmd.Process != nil {
		n.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { n.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			n.cmd.Process.Kill()
			<-done
		}
		n.cmd = nil
	}
}

// PID is the node's tailscaled process (`ip netns exec` runs it in its
// own place), 0 when it is not started.
func (n *TailnetNode) PID() int {
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// Log is the node's tailscaled log.
func (n *TailnetNode) Log() string {
	b, _ := os.ReadFile(filepath.Join(n.Dir, "tailscaled.log"))
	return string(b)
}

// CLI runs the tailscale command against the node, in its namespace.
func (n *TailnetNode) CLI(args ...string) (string, error) {
	argv := append([]string{"netns", "exec", n.NS.Name, n.Tools.Tailscale, "--socket=" + n.Socket}, args...)
	out, err := exec.Command("ip", argv...).CombinedOutput()
	return string(out), err
}

// Up logs the node in to the test's control server.
func (n *TailnetNode) Up(t testing.TB, controlURL, hostname string, extra ...string) {
	t.Helper()
	args := append([]string{"up", "--login-server=" + controlURL, "--hostname=" + hostname, "--timeout=60s"}, extra...)
	if out, err := n.CLI(args...); err != nil {
		t.Fatalf("tailscale up (%s): %v\n%s\ntailscaled log:\n%s", hostname, err, out, n.Log())
	}
}

// TailnetPeer is what a node's status says of a peer.
type TailnetPeer struct {
	HostName      string
	TailscaleIPs  []string
	PrimaryRoutes []string
	AllowedIPs    []string
}

// TailnetStatus is the part of `tailscale status --json` the tests read.
type TailnetStatus struct {
	BackendState string
	Self         TailnetPeer
	Peer         map[string]TailnetPeer
}

// Status reads the node's status.
func (n *TailnetNode) Status(t testing.TB) TailnetStatus {
	t.Helper()
	out, err := n.CLI("status", "--json")
	if err != nil {
		t.Fatalf("tailscale status: %v\n%s", err, out)
	}
	var st TailnetStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("tailscale status: %v\n%s", err, out)
	}
	return st
}

// PeerRoutes are the subnet routes the node has from the peer called
// hostname (nil when it has no such peer).
func (s TailnetStatus) PeerRoutes(hostname string) []string {
	for _, p := range s.Peer {
		if p.HostName == hostname {
			return p.PrimaryRoutes
		}
	}
	return nil
}

// TailnetHost is a namespace with a test control server in it (on
// 172.30.7.1, approving routes inside approve) and one node started in
// userspace mode, not logged in yet: enough for tests of what the host's
// daemon asks of tailscaled. It returns the control URL too.
func TailnetHost(t testing.TB, tag, approve string) (TailnetTools, *Netns, string, *TailnetNode) {
	t.Helper()
	tools := TailnetBinaries(t)
	ns := NewNetns(t, tag)
	ns.IP(t, "addr", "add", "172.30.7.1/32", "dev", "lo")
	url := TailnetControl(t, tools, ns, "172.30.7.1", approve)
	return tools, ns, url, StartTailnetNode(t, tools, ns, url, true)
}
