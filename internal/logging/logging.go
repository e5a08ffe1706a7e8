// Package logging builds the daemon's structured logger: log/slog records
// sent natively to the systemd journal (with their attributes as journal
// fields, so `journalctl VM=vm1` works) when the daemon runs under systemd
// with its standard error connected to the journal, and text lines on
// standard error otherwise.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	slogjournal "github.com/systemd/slog-journal"
	"golang.org/x/sys/unix"
)

// Formats a logger may use.
const (
	FormatAuto    = "auto"
	FormatText    = "text"
	FormatJSON    = "json"
	FormatJournal = "journald"
)

// New returns a logger in format (auto picks journald when stderr is the
// journal stream systemd set up, else text) writing to stderr, and the
// format it chose. With file set, every record is also written there as a
// text line (the daemon's own log that `microvm logs --daemon` shows).
func New(format string, stderr io.Writer, file io.Writer) (*slog.Logger, string, error) {
	l, f, err := newPrimary(format, stderr)
	if err != nil || file == nil {
		return l, f, err
	}
	return slog.New(slog.NewMultiHandler(l.Handler(), slog.NewTextHandler(file, nil))), f, nil
}

func newPrimary(format string, stderr io.Writer) (*slog.Logger, string, error) {
	if format == FormatAuto || format == "" {
		format = FormatText
		if f, ok := stderr.(*os.File); ok && IsJournalStream(f, os.Getenv("JOURNAL_STREAM")) {
			format = FormatJournal
		}
	}
	switch format {
	case FormatText:
		return slog.New(slog.NewTextHandler(stderr, nil)), format, nil
	case FormatJSON:
		return slog.New(slog.NewJSONHandler(stderr, nil)), format, nil
	case FormatJournal:
		h, err := slogjournal.NewHandler(&slogjournal.Options{ReplaceAttr: journalKey, ReplaceGroup: fieldName})
		if err != nil {
			return nil, "", fmt.Errorf("journald logging: %w", err)
		}
		return slog.New(h), format, nil
	}
	return nil, "", fmt.Errorf("unknown log format %q (auto, text, json or journald)", format)
}

// IsJournalStream reports whether f is the stream systemd connected to the
// journal: $JOURNAL_STREAM holds its "device:inode" (see systemd.exec(5)).
func IsJournalStream(f *os.File, journalStream string) bool {
	if journalStream == "" {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return journalStream == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// journalKey renames an attribute to a journal field name ("vm" → "VM").
func journalKey(_ []string, a slog.Attr) slog.Attr {
	a.Key = fieldName(a.Key)
	return a
}

// fieldName maps a key to the journal's ^[A-Z_][A-Z0-9_]*$ form.
func fieldName(k string) string {
	b := []byte(strings.ToUpper(k))
	for i, c := range b {
		if !(c >= 'A' && c <= 'Z' || c == '_' || c >= '0' && c <= '9' && i > 0) {
			b[i] = '_'
		}
	}
	// Fields starting with "_" are trusted ones only journald may set.
	s := strings.TrimLeft(string(b), "_")
	if s == "" {
		return "ATTR"
	}
	return s
}
