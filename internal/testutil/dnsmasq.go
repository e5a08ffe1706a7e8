package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// DNSMasqCommand is Debian's dnsmasq (at bin) run in the namespace called
// ns, in the foreground, reading no host files or configuration of the
// machine, with args (its addresses, port and records).
func DNSMasqCommand(bin, ns, pidFile string, args ...string) *exec.Cmd {
	argv := append([]string{"netns", "exec", ns, bin, "--keep-in-foreground", "--no-resolv", "--no-hosts",
		"--conf-file=/dev/null", "--bind-interfaces", "--user=root", "--pid-file=" + pidFile}, args...)
	cmd := exec.Command("ip", argv...)
	cmd.Stderr = os.Stderr
	return cmd
}

// DNSMasq starts DNSMasqCommand in ns; stop kills it (also when the test
// ends).
func DNSMasq(t testing.TB, ns *Netns, args ...string) (stop func()) {
	t.Helper()
	cmd := DNSMasqCommand(RequireCommand(t, "dnsmasq"), ns.Name, filepath.Join(t.TempDir(), "pid"), args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cmd.Process.Kill()
			cmd.Wait()
		}
	}
	t.Cleanup(stop)
	return stop
}
