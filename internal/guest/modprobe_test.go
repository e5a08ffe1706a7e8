package guest

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestModprobePlanOnDebiansKernel resolves what the kernel and Docker ask
// modprobe for against Debian's own module tree (depmod's indexes), as
// kmod's modprobe would: aliases, dependencies first, softdeps, built-ins.
func TestModprobePlanOnDebiansKernel(t *testing.T) {
	dirs, _ := filepath.Glob(filepath.Join(DefaultKernelCache, "amd64", "*", "modules"))
	if len(dirs) == 0 {
		t.Skip("no Debian kernel in the cache (scripts/fetch-kernel.sh)")
	}
	dir := dirs[len(dirs)-1]
	names := func(files []string) string {
		var out []string
		for _, f := range files {
			if !strings.HasPrefix(f, dir+"/") {
				t.Errorf("%s is not in %s", f, dir)
			}
			out = append(out, normName(f))
		}
		return strings.Join(out, " ")
	}
	for _, c := range []struct{ name, last, before string }{
		// ip link add wg0 type wireguard asks for rtnl-link-wireguard.
		{"rtnl-link-wireguard", "wireguard", "udp_tunnel"},
		{"br_netfilter", "br_netfilter", "bridge"},
		{"br-netfilter", "br_netfilter", "bridge"},
		{"overlay", "overlay", ""},
		// ext4 needs crc32c through the crypto API: a softdep, loaded first.
		{"ext4", "ext4", "crc32c_generic"},
	} {
		files, err := ModprobePlan(dir, c.name)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		got := names(files)
		if !strings.HasSuffix(got, c.last) && !strings.Contains(got, c.last+" ") {
			t.Errorf("%s loads %q, want %s", c.name, got, c.last)
		}
		if c.before != "" && (!strings.Contains(got, c.before) || strings.Index(got, c.before) > strings.Index(got, c.last)) {
			t.Errorf("%s loads %q: want %s before %s", c.name, got, c.before, c.last)
		}
	}
	if _, err := ModprobePlan(dir, "no-such-module"); !errors.Is(err, ErrNoModule) || !strings.Contains(err.Error(), dir) {
		t.Errorf("a module that does not exist: %v; want ErrNoModule naming %s", err, dir)
	}
	builtin, _ := os.ReadFile(filepath.Join(dir, "modules.builtin"))
	first, _, _ := strings.Cut(string(builtin), "\n")
	if files, err := ModprobePlan(dir, normName(first)); err != nil || files != nil {
		t.Errorf("a built-in module (%s): %v %v; want nothing to load", first, files, err)
	}
}
