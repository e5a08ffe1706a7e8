package tailnet

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"microvm.dev/microvm/internal/testutil"
)

func TestSyncWithFakeTailscale(t *testing.T) {
	dir := t.TempDir()
	c := Client{Bin: testutil.FakeTailscale(t, dir)}
	subnets := []netip.Prefix{netip.MustParsePrefix("10.2.0.0/24"), netip.MustParsePrefix("10.1.0.0/24")}
	changed, err := c.Sync(context.Background(), subnets)
	if err != nil || !changed {
		t.Fatalf("first sync: %v %v", changed, err)
	}
	if got, _ := c.Advertised(context.Background()); strings.Join(got, ",") != "10.1.0.0/24,10.2.0.0/24" {
		t.Errorf("advertised %v", got)
	}
	if changed, err := c.Sync(context.Background(), subnets); err != nil || changed {
		t.Errorf("an unchanged sync changed routes: %v %v", changed, err)
	}
	if _, err := c.Sync(context.Background(), subnets[:1]); err != nil {
		t.Fatal(err)
	}
	calls, _ := os.ReadFile(filepath.Join(dir, "calls"))
	want := "debug prefs\nset --advertise-routes=10.1.0.0/24,10.2.0.0/24\ndebug prefs\ndebug prefs\ndebug prefs\nset --advertise-routes=10.2.0.0/24\n"
	if string(calls) != want {
		t.Errorf("calls:\n%s\nwant:\n%s", calls, want)
	}
}

func TestNoTailscale(t *testing.T) {
	c := Client{Bin: filepath.Join(t.TempDir(), "tailscale")}
	if _, err := c.Sync(context.Background(), nil); !errors.Is(err, ErrNoTailscale) || !strings.Contains(err.Error(), "not installed") {
		t.Errorf("err = %v", err)
	}
}
