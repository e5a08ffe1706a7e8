package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/hostnet"
	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/network"
	"microvm.dev/microvm/internal/testutil"
	"microvm.dev/microvm/internal/vmm"
)

// shared is built once by TestMain: microvm-init, the store with the base
// image, and the initramfs cache every test's state directory links to.
var shared struct {
	dir     string
	initDir string
	err     error
}

func TestMain(m *testing.M) {
	if os.Getenv(tryOpenEnv) != "" {
		tryOpen(os.Args[1:])
		return
	}
	if os.Geteuid() == 0 {
		shared.err = setup()
	}
	code := m.Run()
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

func setup() error {
	dir, err := os.MkdirTemp("", "microvm-e2e-")
	if err != nil {
		return err
	}
	// Unprivileged hypervisors open block store images under it.
	if err := os.Chmod(dir, 0o711); err != nil {
		return err
	}
	shared.dir = dir
	shared.initDir = filepath.Join(dir, "bin")
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	cmd := exec.Command(gobin, "build", "-ldflags=-s -w", "-o", filepath.Join(shared.initDir, "microvm-init"), "microvm.dev/microvm/cmd/microvm-init")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build microvm-init: %v\n%s", err, out)
	}
	cmd = exec.Command(gobin, "build", "-o", filepath.Join(shared.initDir, "microvm"), "microvm.dev/microvm/cmd/microvm")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build microvm: %v\n%s", err, out)
	}
	if out, err := exec.Command("bash", "../scripts/build-base-image.sh", filepath.Join(dir, "store", "base")).CombinedOutput(); err != nil {
		return fmt.Errorf("build the base image: %v\n%s", err, out)
	}
	if _, err := guest.ResolveKernel(config.Kernel{}, vmm.HostArch(), vmm.HostArch(), guest.DefaultKernelCache); err != nil {
		return err
	}
	return os.MkdirAll(filepath.Join(dir, "cache"), 0o755)
}

// requireGuestEnv skips without root and fails if the shared setup failed.
func requireGuestEnv(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "qemu-system-x86_64")
	if shared.err != nil {
		t.Fatalf("end-to-end setup: %v", shared.err)
	}
}

// newEnv gives a test its own state directory sharing the store and the
// initramfs cache, with VMs' hypervisors in the namespace ns.
func newEnv(t *testing.T, ns *testutil.Netns) launch.Env {
	return newEnvStore(t, ns, "store")
}

func newEnvStore(t *testing.T, ns *testutil.Netns, store string) launch.Env {
	t.Helper()
	st := t.TempDir()
	for link, target := range map[string]string{"store": store, "cache": "cache"} {
		if err := os.Symlink(filepath.Join(shared.dir, target), filepath.Join(st, link)); err != nil {
			t.Fatal(err)
		}
	}
	return launch.Env{StateDir: st, RunDir: filepath.Join(st, "run"), KernelCache: guest.DefaultKernelCache, InitDir: shared.initDir, NetNS: ns.Path}
}

// netLab creates a namespace standing in for the host, parses src and
// applies its network there.
func netLab(t *testing.T, tag, src string) (*testutil.Netns, *config.Config) {
	t.Helper()
	ns := testutil.NewNetns(t, tag)
	cfg, err := config.Parse(tag+".yaml", []byte(src), config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := network.New(ns.Path, hostnet.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	return ns, cfg
}

// sshTo connects to the VM from inside ns with microvm's client key,
// pinning the VM's host key.
func sshTo(t *testing.T, ns *testutil.Netns, p *launch.Prepared) *ssh.Client {
	t.Helper()
	key, err := os.ReadFile(p.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return sshWith(t, ns, p, signer)
}

// sshWith connects as root with signer, pinning the VM's host key.
func sshWith(t *testing.T, ns *testutil.Netns, p *launch.Prepared, signer ssh.Signer) *ssh.Client {
	t.Helper()
	hostKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(p.HostKeyPub))
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort(p.VM.Net.Address.String(), "22")
	var conn net.Conn
	deadline := time.Now().Add(30 * time.Second)
	for {
		ns.Do(t, func() { conn, err = net.DialTimeout("tcp", addr, 2*time.Second) })
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("ssh to %s: %v", addr, err)
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, &ssh.ClientConfig{
		User:            "root",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(hostKey),
		Timeout:         10 * time.Second,
	})
	if err != nil {
		t.Fatalf("ssh handshake with %s: %v", addr, err)
	}
	client := ssh.NewClient(c, chans, reqs)
	t.Cleanup(func() { client.Close() })
	return client
}

// run executes cmd in the VM and returns its stdout, failing the test on a
// non-zero exit.
func run(t *testing.T, c *ssh.Client, cmd string) string {
	t.Helper()
	out, err := runErr(c, cmd)
	if err != nil {
		t.Fatalf("in the VM: %s: %v\n%s", cmd, err, out)
	}
	return out
}

func runErr(c *ssh.Client, cmd string) (string, error) {
	s, err := c.NewSession()
	if err != nil {
		return "", err
	}
	defer s.Close()
	out, err := s.CombinedOutput(cmd)
	return strings.TrimSpace(string(out)), err
}
