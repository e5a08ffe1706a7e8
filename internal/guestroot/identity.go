package guestroot

import (
	"fmt"
	"os"
	"strings"

	"microvm.dev/microvm/internal/guest"
)

// WriteIdentity writes the files a container runtime gives its workload:
// /etc/resolv.conf, /etc/hostname and /etc/hosts naming the VM.
func (r Root) WriteIdentity(spec *guest.Spec) error {
	var resolv strings.Builder
	for _, ns := range spec.Net.DNS {
		fmt.Fprintf(&resolv, "nameserver %s\n", ns)
	}
	if len(spec.Net.Search) > 0 {
		fmt.Fprintf(&resolv, "search %s\n", strings.Join(spec.Net.Search, " "))
	}
	addr, _, _ := strings.Cut(spec.Net.Address, "/")
	hosts := fmt.Sprintf("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s\t%s\n", addr, spec.Name)
	if addr6, _, ok := strings.Cut(spec.Net.Address6, "/"); ok {
		hosts += fmt.Sprintf("%s\t%s\n", addr6, spec.Name)
	}
	for _, f := range []struct{ path, body string }{
		{"/etc/resolv.conf", resolv.String()},
		{"/etc/hostname", spec.Name + "\n"},
		{"/etc/hosts", hosts},
	} {
		os.Remove(r.Path(f.path)) // may be a symlink in the image
		if err := os.WriteFile(r.Path(f.path), []byte(f.body), 0o644); err != nil {
			return err
		}
	}
	return nil
}
