package vmm

import "testing"

func TestShellQuote(t *testing.T) {
	got := ShellQuote([]string{"qemu", "-append", "console=ttyS0 quiet", "it's", ""})
	want := `qemu -append 'console=ttyS0 quiet' 'it'\''s' ''`
	if got != want {
		t.Errorf("ShellQuote = %s, want %s", got, want)
	}
}
