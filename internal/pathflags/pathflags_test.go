package pathflags

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/pflag"
)

func TestAbsolute(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	state, abs, empty, other := fs.String("state-dir", "/var/lib/microvm", ""), fs.String("ca", "", ""), fs.String("token", "", ""), fs.String("git-path", "", "")
	if err := fs.Parse([]string{"--state-dir", "st", "--ca", "/etc/ca.pem", "--git-path", "infra"}); err != nil {
		t.Fatal(err)
	}
	if err := Absolute(fs, "state-dir", "ca", "token", "missing"); err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	if *state != filepath.Join(wd, "st") || *abs != "/etc/ca.pem" || *empty != "" || *other != "infra" {
		t.Errorf("state %q ca %q token %q git-path %q", *state, *abs, *empty, *other)
	}
}
