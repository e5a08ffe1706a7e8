package vmssh

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestAuthorizeCommand: the keys reach the guest's command whole, as the
// shell of an SSH session splits the line, a comment with a quote too.
func TestAuthorizeCommand(t *testing.T) {
	keys := []string{"ssh-ed25519 AAAAC3Nza host a", "ssh-ed25519 AAAAC3Nzb it's mine; rm -rf /"}
	for _, only := range []bool{false, true} {
		cmd := AuthorizeCommand(only, keys...)
		prefix := "/run/microvm/init authorize"
		if only {
			prefix += " --only"
		}
		if !strings.HasPrefix(cmd, prefix+" ") {
			t.Fatalf("command %q", cmd)
		}
		out, err := exec.Command("sh", "-c", "printf '%s\\n'"+strings.TrimPrefix(cmd, prefix)).Output()
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n"); !slices.Equal(got, keys) {
			t.Errorf("the shell gives %q, want %q", got, keys)
		}
	}
}
