package guestagent

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/vmm"
)

// The command of each session request, with payloads as an SSH client
// marshals them (RFC 4254, 6.5).
func TestSessionCommand(t *testing.T) {
	for _, c := range []struct {
		typ     string
		payload []byte
		want    []string
		err     string
	}{
		{"shell", nil, []string{"/bin/sh", "-l"}, ""},
		{"exec", ssh.Marshal(struct{ Command string }{"uname -a; id"}), []string{"/bin/sh", "-c", "uname -a; id"}, ""},
		{"subsystem", ssh.Marshal(struct{ Name string }{"sftp"}), []string{"/run/microvm/init", "sftp-server"}, ""},
		{"subsystem", ssh.Marshal(struct{ Name string }{"netconf"}), nil, `unknown subsystem "netconf"`},
		{"exec", []byte{0, 0}, nil, "exec request"},
		{"x11-req", nil, nil, `unknown session request "x11-req"`},
	} {
		got, err := SessionCommand(c.typ, c.payload)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: %v, %v; want an error with %q", c.typ, got, err, c.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: %q, %v; want %q", c.typ, got, err, c.want)
		}
	}
	// The SFTP server's command is a copy: a caller cannot change it.
	got, _ := SessionCommand("subsystem", ssh.Marshal(struct{ Name string }{"sftp"}))
	got[0] = "x"
	if SFTPServer[0] != "/run/microvm/init" {
		t.Error("SessionCommand handed out SFTPServer itself")
	}
}

// A wait status (as wait4 fills it) reads as a shell would say it.
func TestExits(t *testing.T) {
	for _, c := range []struct {
		ws   unix.WaitStatus
		desc string
		code int
	}{
		{0, "status 0", 0},
		{3 << 8, "status 3", 3},
		{unix.WaitStatus(unix.SIGKILL), "signal killed", 137},
		{unix.WaitStatus(unix.SIGTERM) | 0x80, "signal terminated", 143}, // with a core dump
	} {
		if got := DescribeExit(c.ws); got != c.desc {
			t.Errorf("DescribeExit(%#x) = %q, want %q", int(c.ws), got, c.desc)
		}
		if got := ExitCode(c.ws); got != c.code {
			t.Errorf("ExitCode(%#x) = %d, want %d", int(c.ws), got, c.code)
		}
	}
}

// The ready line names the failed units of a degraded systemd, as the
// host reads them back (vmm.ReadyResult).
func TestReadyLine(t *testing.T) {
	out := "foo.service loaded failed failed Foo\nbar.mount   loaded failed failed Bar\n"
	got := ReadyLine("vm1", "3.21", "systemd", "degraded", FailedUnits(out))
	want := guest.ReadyPrefix + " vm=vm1 uptime=3.21 init=systemd state=degraded failed=foo.service,bar.mount"
	if got != want {
		t.Errorf("ReadyLine = %q, want %q", got, want)
	}
	if got := ReadyLine("vm1", "1", "init", "running", FailedUnits("\n")); strings.Contains(got, "failed=") {
		t.Errorf("a running init's line names failures: %q", got)
	}
	// The host reads it back from the console as it was meant.
	log := filepath.Join(t.TempDir(), "console.log")
	if err := os.WriteFile(log, []byte("booting\r\n\r\n"+got+"\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := vmm.WaitConsole(log, 0, guest.ReadyPrefix, guest.FailedPrefix, 5*time.Second, nil, nil)
	if err != nil || res.Readiness() != "degraded: foo.service, bar.mount" || res.GuestUptime != "3.21" {
		t.Errorf("the host reads %+v, %v", res, err)
	}
}
