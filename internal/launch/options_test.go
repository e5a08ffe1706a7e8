package launch

import (
	"errors"
	"strings"
	"testing"
)

// The launch flags' mistakes are option errors naming the flag; a missing
// default user is a warning (hypervisors as root), a missing named one an
// error.
func TestNewEnv(t *testing.T) {
	base := Options{StateDir: t.TempDir(), VMMIDs: "auto", VMMConfine: "auto", NoSecrets: true}
	for _, c := range []struct {
		name   string
		change func(*Options)
		err    string // "" for none
		warn   string
	}{
		{"root", func(o *Options) { o.VMMUser = "root" }, "", ""},
		{"default user missing", func(o *Options) { o.VMMUser = "no-such-user-here" }, "", "hypervisors run as root"},
		{"named user missing", func(o *Options) { o.VMMUser, o.VMMUserNamed = "no-such-user-here", true }, "--vmm-user", ""},
		{"confine", func(o *Options) { o.VMMConfine = "sometimes" }, "--vmm-confine must be auto or off", ""},
		{"identity", func(o *Options) { o.NoSecrets, o.Identities = false, []string{"/nonexistent/key.txt"} }, "--age-identity", ""},
		{"image key", func(o *Options) { o.ImageKeys = []string{"/nonexistent/cosign.pub"} }, "--image-key /nonexistent/cosign.pub", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := base
			c.change(&o)
			env, warnings, err := NewEnv(o)
			switch {
			case c.err == "" && err != nil:
				t.Fatalf("error %v", err)
			case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err) || !errors.Is(err, ErrOption)):
				t.Fatalf("error %v, want an option error with %q", err, c.err)
			}
			if got := strings.Join(warnings, "\n"); (c.warn == "") != (got == "") || !strings.Contains(got, c.warn) {
				t.Errorf("warnings %q, want %q", got, c.warn)
			}
			if c.err == "" && (env.VMMUser != nil || env.StateDir != o.StateDir) {
				t.Errorf("env %+v", env)
			}
		})
	}
	if _, err := VMMIDs("5:x", "microvm"); err == nil || !errors.Is(err, ErrOption) || !strings.Contains(err.Error(), "--vmm-ids") {
		t.Errorf("--vmm-ids 5:x: %v", err)
	}
}
