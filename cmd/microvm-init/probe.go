package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// probe is "microvm-init probe": run inside a VM's root by `microvm
// verify` over SSH, it reports the facts verify checks as key=value lines
// with nothing from the image (no ping, nc or awk needed, so it works on
// any image): hostname, vCPUs, memory, the mounts of /, /var and the
// volumes, whether the store refuses a write, ICMP reach (ping NAME=ADDR)
// TCP reach (tcp NAME=ADDR:PORT: connected, refused or blocked) and name
// lookups through the root's /etc/resolv.conf (dns NAME=HOST: the
// addresses, or "failed: why").
func probe(args []string) error {
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	host, _ := os.Hostname()
	fmt.Fprintf(out, "hostname=%s\nnproc=%d\nmemkb=%d\n", host, runtime.NumCPU(), memTotalKB())
	mounts := readMounts()
	fmt.Fprintf(out, "var=%s\n", mounts["/var"].fstype)
	for _, o := range strings.Split(mounts["/"].options, ",") {
		if strings.HasPrefix(o, "upperdir=") && mounts["/"].fstype == "overlay" {
			fmt.Fprintf(out, "root_upper=%s\n", o)
		}
	}
	if err := os.WriteFile("/run/microvm/store/.microvm-verify", []byte("x"), 0o600); err == nil {
		os.Remove("/run/microvm/store/.microvm-verify")
		fmt.Fprintln(out, "store_write=succeeded")
	} else {
		fmt.Fprintln(out, "store_write=refused")
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	report := func(k, v string) {
		mu.Lock()
		fmt.Fprintf(out, "%s=%s\n", k, v)
		mu.Unlock()
	}
	for i := 0; i+1 < len(args); i += 2 {
		kind, spec := args[i], args[i+1]
		key, target, ok := strings.Cut(spec, "=")
		if !ok {
			return fmt.Errorf("probe: %s %q is not NAME=TARGET", kind, spec)
		}
		switch kind {
		case "mount":
			report("mount "+target, mounts[target].fstype)
		case "ping":
			wg.Add(1)
			go func() { defer wg.Done(); report(key, pingResult(target)) }()
		case "tcp":
			wg.Add(1)
			go func() { defer wg.Done(); report(key, tcpResult(target)) }()
		case "dns":
			wg.Add(1)
			go func() { defer wg.Done(); report(key, dnsResult(target)) }()
		default:
			return fmt.Errorf("probe: unknown probe %q (mount, ping, tcp, dns)", kind)
		}
	}
	wg.Wait()
	return nil
}

type mountEntry struct{ fstype, options string }

// readMounts maps each mount point to its last mount's type and options.
func readMounts() map[string]mountEntry {
	m := map[string]mountEntry{}
	b, _ := os.ReadFile("/proc/mounts")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 4 {
			m[f[1]] = mountEntry{f[2], f[3]}
		}
	}
	return m
}

func memTotalKB() int {
	b, _ := os.ReadFile("/proc/meminfo")
	var kb int
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "MemTotal:") {
			fmt.Sscanf(strings.TrimPrefix(line, "MemTotal:"), "%d", &kb)
		}
	}
	return kb
}

// tcpResult connects to addr within 2 s.
func tcpResult(addr string) string {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	switch {
	case err == nil:
		c.Close()
		return "connected"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	}
	return "blocked"
}

// dnsResult looks host up as the VM's programs do (its /etc/resolv.conf,
// search domains included), within 5 s: its addresses, comma-separated,
// or "failed: " and why.
func dnsResult(host string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r := &net.Resolver{PreferGo: true}
	addrs, err := r.LookupHost(ctx, host)
	if err != nil {
		return "failed: " + err.Error()
	}
	sort.Strings(addrs)
	return strings.Join(addrs, ",")
}

// pingResult sends one ICMP echo request to addr and waits 2 s for the
// reply: "ok" or "unreachable".
func pingResult(addr string) string {
	dst := net.ParseIP(addr)
	if dst == nil {
		return "unreachable"
	}
	// ICMP echo request and reply types, IPv4's and IPv6's; the kernel
	// computes an ICMPv6 checksum itself.
	network, local, request, reply := "ip4:icmp", "0.0.0.0", byte(8), byte(0)
	if dst.To4() == nil {
		network, local, request, reply = "ip6:ipv6-icmp", "::", 128, 129
	}
	c, err := net.ListenPacket(network, local)
	if err != nil {
		return "unreachable"
	}
	defer c.Close()
	id := uint16(os.Getpid())
	msg := []byte{request, 0, 0, 0, byte(id >> 8), byte(id), 0, 1, 'm', 'v'}
	if request == 8 {
		binary.BigEndian.PutUint16(msg[2:], checksum(msg))
	}
	if _, err := c.WriteTo(msg, &net.IPAddr{IP: dst}); err != nil {
		return "unreachable"
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return "unreachable"
		}
		ip, _ := from.(*net.IPAddr)
		// An echo reply to this id from the address probed.
		if n >= 8 && buf[0] == reply && binary.BigEndian.Uint16(buf[4:]) == id && ip != nil && ip.IP.Equal(dst) {
			return "ok"
		}
	}
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
