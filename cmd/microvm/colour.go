package main

import (
	"io"
	"os"

	"golang.org/x/term"

	"microvm.dev/microvm/internal/verify"
)

// colourful says whether w is a terminal that wants colour: never when
// output is redirected, nor with NO_COLOR set (no-color.org).
func colourful(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb" && term.IsTerminal(int(f.Fd()))
}

// statusWord is a check's status, coloured on a terminal.
func statusWord(s verify.Status, colour bool) string {
	if !colour {
		return string(s)
	}
	code := map[verify.Status]string{verify.Pass: "32", verify.Fail: "31", verify.Skip: "33"}[s]
	return "\x1b[" + code + "m" + string(s) + "\x1b[0m"
}
