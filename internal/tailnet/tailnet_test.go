package tailnet

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"microvm.dev/microvm/internal/testutil"
)

// Against Tailscale's own tailscaled and tailscale (built from the
// tailscale.com module by tools/tailnet) and its test control server, which
// approves routes inside 10.0.0.0/8 as an autoApprovers policy would.
func TestSyncWithTailscaled(t *testing.T) {
	tools, _, url, node := testutil.TailnetHost(t, "tsn", "10.0.0.0/8")
	c := Client{Bin: tools.Tailscale, Socket: node.Socket}
	ctx := context.Background()
	subnets := []netip.Prefix{netip.MustParsePrefix("10.2.0.0/24"), netip.MustParsePrefix("10.1.0.0/24"), netip.MustParsePrefix("fd6d:6963:a01::/64")}

	// Not logged in: nothing is set, so the first `tailscale up` (which
	// wants every non-default setting named) is not refused.
	if _, err := c.Sync(ctx, subnets, nil); !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "NeedsLogin") {
		t.Fatalf("sync before login: %v", err)
	}
	if got, err := c.Advertised(ctx); err != nil || len(got) != 0 {
		t.Fatalf("advertised before login: %v %v", got, err)
	}
	node.Up(t, url, "hv")

	changed, err := c.Sync(ctx, subnets, nil)
	if err != nil || !changed {
		t.Fatalf("first sync: %v %v", changed, err)
	}
	want := []string{"10.1.0.0/24", "10.2.0.0/24", "fd6d:6963:a01::/64"}
	if got, _ := c.Advertised(ctx); !slices.Equal(got, want) {
		t.Errorf("advertised %v, want %v", got, want)
	}
	st := awaitApproved(t, c, []string{"10.1.0.0/24", "10.2.0.0/24"})
	if len(st.Addrs) == 0 || !st.Addrs[0].Is4() || !netip.MustParsePrefix("100.64.0.0/10").Contains(st.Addrs[0]) {
		t.Errorf("tailnet addresses %v", st.Addrs)
	}
	if u := Missing(want, st.Approved); !slices.Equal(u, []string{"fd6d:6963:a01::/64"}) {
		t.Errorf("unapproved %v", u)
	}
	if changed, err := c.Sync(ctx, subnets, nil); err != nil || changed {
		t.Errorf("an unchanged sync changed routes: %v %v", changed, err)
	}
	// The admin makes the host an exit node and advertises a LAN too: a
	// subnet gone is withdrawn (the tailnet stops routing it), theirs stay.
	if out, err := c.run(ctx, "set", "--advertise-exit-node", "--advertise-routes="+strings.Join(append(want, "192.168.1.0/24"), ",")); err != nil {
		t.Fatalf("tailscale set: %v %s", err, out)
	}
	mine := func(r string) bool { return slices.Contains(want, r) }
	if changed, err := c.Sync(ctx, subnets[1:2], mine); err != nil || !changed {
		t.Fatalf("sync to one subnet: %v %v", changed, err)
	}
	if got, _ := c.Advertised(ctx); !slices.Equal(got, []string{"0.0.0.0/0", "10.1.0.0/24", "192.168.1.0/24", "::/0"}) {
		t.Errorf("after the sync with an exit node and a LAN: %v", got)
	}
	// Without a record of its own routes, only an exit node's are kept.
	if _, err := c.Sync(ctx, subnets[1:2], nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Advertised(ctx); !slices.Equal(got, []string{"0.0.0.0/0", "10.1.0.0/24", "::/0"}) {
		t.Errorf("after a sync without a record: %v", got)
	}
	awaitApproved(t, c, []string{"10.1.0.0/24"})

	node.Stop()
	if _, err := c.Sync(ctx, subnets, nil); err == nil || errors.Is(err, ErrNotRunning) {
		t.Errorf("sync with tailscaled stopped: %v", err)
	}
}

func awaitApproved(t *testing.T, c Client, want []string) Node {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := c.Status(context.Background())
		if err == nil && slices.Equal(st.Approved, want) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("approved routes: %+v %v, want %v", st, err, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// The record of microvm's own routes: none at first (all but an exit
// node's), then what was saved.
func TestOwned(t *testing.T) {
	dir := t.TempDir()
	// No record: every route but an exit node's counts as microvm's.
	if owned, err := Owned(dir); err != nil || !owned("10.1.0.0/24") || owned("0.0.0.0/0") || owned("::/0") {
		t.Fatalf("no record: %v", err)
	}
	if err := SaveOwned(dir, []string{"10.1.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	owned, err := Owned(dir)
	if err != nil || !owned("10.1.0.0/24") || owned("10.2.0.0/24") {
		t.Errorf("after saving: %v", err)
	}
}

func TestNoTailscale(t *testing.T) {
	c := Client{Bin: filepath.Join(t.TempDir(), "tailscale")}
	if _, err := c.Sync(context.Background(), nil, nil); !errors.Is(err, ErrNoTailscale) || !strings.Contains(err.Error(), "not installed") {
		t.Errorf("err = %v", err)
	}
}
