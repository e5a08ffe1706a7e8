package testutil

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// Netns is a named network namespace a test created; it is deleted (with
// every interface in it) when the test ends.
type Netns struct {
	Name string
	Path string
}

// NewNetns creates the namespace mv<pid>-<tag> with its loopback up.
func NewNetns(t testing.TB, tag string) *Netns {
	t.Helper()
	RequireRoot(t)
	name := fmt.Sprintf("mv%d-%s", os.Getpid()%100000, tag)
	exec.Command("ip", "netns", "del", name).Run() // a leftover of a killed run
	MustRun(t, "ip", "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	ns := &Netns{Name: name, Path: filepath.Join("/run/netns", name)}
	ns.IP(t, "link", "set", "lo", "up")
	return ns
}

// IP runs `ip -n NS args…` and fails the test on error.
func (n *Netns) IP(t testing.TB, args ...string) {
	t.Helper()
	MustRun(t, "ip", append([]string{"-n", n.Name}, args...)...)
}

// Exec runs a command inside the namespace and returns its combined output.
func (n *Netns) Exec(argv ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.Name}, argv...)...).CombinedOutput()
	return string(out), err
}

// MustRun runs a command and fails the test on error.
func MustRun(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// Veth joins two namespaces with a veth pair aName (in a) and bName (in b).
func Veth(t testing.TB, a *Netns, aName string, b *Netns, bName string) {
	t.Helper()
	MustRun(t, "ip", "-n", a.Name, "link", "add", aName, "type", "veth", "peer", "name", bName, "netns", b.Name)
}

// Do runs fn on an OS thread inside the namespace; sockets fn creates stay
// in the namespace after it returns.
func (n *Netns) Do(t testing.TB, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	target, err := netns.GetFromPath(n.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(err)
		}
	}()
	fn()
}

// Listen listens on TCP addr inside the namespace (closed when the test
// ends); what accepts its connections may run anywhere.
func (n *Netns) Listen(t testing.TB, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	n.Do(t, func() {
		var err error
		if ln, err = net.Listen(tcpFamily(addr), addr); err != nil {
			t.Fatalf("listen %s in %s: %v", addr, n.Name, err)
		}
	})
	t.Cleanup(func() { ln.Close() })
	return ln
}

// Serve listens on TCP addr inside the namespace and answers every
// connection with the address it came from, then closes it.
func (n *Netns) Serve(t testing.TB, addr string) {
	t.Helper()
	ln := n.Listen(t, addr)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, c.RemoteAddr().(*net.TCPAddr).IP.String())
			c.Close()
		}
	}()
}

// Dial connects from the namespace to addr (from source address src when
// not empty) and returns what a Serve listener answered: the client address
// it saw. An error means no connection within the timeout.
func (n *Netns) Dial(t testing.TB, src, addr string, timeout time.Duration) (string, error) {
	t.Helper()
	var c net.Conn
	var err error
	n.Do(t, func() {
		d := net.Dialer{Timeout: timeout}
		if src != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		}
		c, err = d.Dial(tcpFamily(addr), addr)
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	b, err := io.ReadAll(c)
	return string(b), err
}

// tcpFamily is tcp6 for an IPv6 host:port, else tcp4 (never both: a
// wildcard listens on one family only, as the test says).
func tcpFamily(addr string) string {
	host, _, _ := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		return "tcp6"
	}
	return "tcp4"
}

// Ping sends one ICMP echo from the namespace and reports whether it was answered.
func (n *Netns) Ping(t testing.TB, addr string) bool {
	t.Helper()
	RequireCommand(t, "ping")
	_, err := n.Exec("ping", "-c", "1", "-W", "2", addr)
	return err == nil
}
