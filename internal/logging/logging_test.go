package logging

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"microvm.dev/microvm/internal/testutil"
)

// TestJournal sends a record through the real slog-journal handler to a
// journal socket. There is no journald here, so a helper process runs in a
// private mount namespace with a tmpfs on /run and listens on
// /run/systemd/journal/socket itself; the host's /run is never touched.
func TestJournal(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "unshare")
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", os.Args[0], "-test.run=^TestJournalHelper$", "-test.v")
	cmd.Env = append(os.Environ(), "MICROVM_JOURNAL_HELPER=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	for _, want := range []string{"MESSAGE=vm started", "VM=vm1", "BOOT_SECONDS=6.1", "PRIORITY=6", "GENERATION=3"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("journal entry lacks %s:\n%s", want, out)
		}
	}
}

func TestJournalHelper(t *testing.T) {
	if os.Getenv("MICROVM_JOURNAL_HELPER") != "1" {
		t.Skip("runs only as TestJournal's helper")
	}
	if err := unix.Mount("tmpfs", "/run", "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll("/run/systemd/journal", 0o755)
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: "/run/systemd/journal/socket", Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	log, format, err := New(FormatJournal, os.Stderr, nil)
	if err != nil || format != FormatJournal {
		t.Fatal(format, err)
	}
	log.With("generation", 3).Info("vm started", "vm", "vm1", "boot-seconds", 6.1)
	buf := make([]byte, 65536)
	n, _, err := conn.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("%s\n", buf[:n])
}

func TestAutoPicksJournalOnlyForItsStream(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	unix.Fstat(int(f.Fd()), &st)
	if !IsJournalStream(f, fmt.Sprintf("%d:%d", st.Dev, st.Ino)) {
		t.Error("its own dev:ino is not recognised")
	}
	if IsJournalStream(f, "1:2") || IsJournalStream(f, "") {
		t.Error("a foreign or empty JOURNAL_STREAM is taken as the journal")
	}
	t.Setenv("JOURNAL_STREAM", "")
	if _, format, err := New(FormatAuto, f, nil); err != nil || format != FormatText {
		t.Errorf("auto without systemd = %s, %v", format, err)
	}
	if _, _, err := New("xml", f, nil); err == nil || !strings.Contains(err.Error(), "unknown log format") {
		t.Errorf("err = %v", err)
	}
}

func TestFieldName(t *testing.T) {
	for in, want := range map[string]string{"vm": "VM", "boot-seconds": "BOOT_SECONDS", "_pid": "PID", "9lives": "LIVES", "": "ATTR"} {
		if got := fieldName(in); got != want {
			t.Errorf("fieldName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRotatingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log", "daemon.log")
	r, err := OpenRotating(path, 100, 2)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Repeat("x", 39) + "\n" // 40 bytes
	for range 7 {
		if _, err := r.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	r.Close()
	size := func(p string) int64 {
		fi, err := os.Stat(p)
		if err != nil {
			return -1
		}
		return fi.Size()
	}
	// 7 lines of 40 bytes, at most 2 per 100-byte file: 1 + 2 + 2 kept, the
	// oldest 2 dropped (Keep 2).
	if size(path) != 40 || size(path+".1") != 80 || size(path+".2") != 80 || size(path+".3") != -1 {
		t.Errorf("sizes: %d %d %d %d", size(path), size(path+".1"), size(path+".2"), size(path+".3"))
	}
}

func TestAlsoToFile(t *testing.T) {
	var stderr, file strings.Builder
	log, _, err := New(FormatText, &stderr, &file)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("applied", "vm", "vm1")
	if !strings.Contains(stderr.String(), "vm=vm1") || !strings.Contains(file.String(), "msg=applied vm=vm1") {
		t.Errorf("stderr %q, file %q", stderr.String(), file.String())
	}
}
