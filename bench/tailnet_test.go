package bench

import (
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"microvm.dev/microvm/internal/testutil"
)

// BenchmarkTailnetRouter measures the host's subnet router side by side in
// one run, the two ways the daemon could be a tailnet node: the system's
// tailscaled with its TUN device (what microvm drives), and tailscaled's
// userspace network stack (gVisor's netstack, which is what the tsnet
// library embeds: a daemon that were its own tailnet node would route like
// this). A laptop node (TUN) downloads from a TCP server standing for a
// VM, on its own bridge-side network behind each router, through the
// tunnel, direct (not relayed); rounds alternate between the two routers.
// It reports each one's median throughput and its tailscaled's resident
// memory after the transfers (VmRSS, and VmHWM, the peak). Run as root:
//
//	go test -run '^$' -bench TailnetRouter -benchtime 1x ./bench
//
// The "VM" is a network namespace, not a guest: under TCG a guest's own
// TCP stack, not the router, would set the pace.
func BenchmarkTailnetRouter(b *testing.B) {
	tools := testutil.TailnetBinaries(b)
	lap := testutil.NewNetns(b, "bl")
	url := ""
	type router struct {
		name    string
		node    *testutil.TailnetNode
		server  string
		samples []float64
	}
	var routers []*router
	for i, mode := range []string{"tun", "userspace"} {
		hv := testutil.NewNetns(b, "bh"+strconv.Itoa(i))
		vm := testutil.NewNetns(b, "bv"+strconv.Itoa(i))
		lan := fmt.Sprintf("172.30.%d", 20+i)
		testutil.Veth(b, hv, "lan0", lap, "lan"+strconv.Itoa(i))
		hv.IP(b, "addr", "add", lan+".1/24", "dev", "lan0")
		hv.IP(b, "link", "set", "lan0", "up")
		lap.IP(b, "addr", "add", lan+".2/24", "dev", "lan"+strconv.Itoa(i))
		lap.IP(b, "link", "set", "lan"+strconv.Itoa(i), "up")
		hv.IP(b, "route", "add", "default", "via", lan+".2")
		subnet := fmt.Sprintf("10.%d.0", 41+i)
		testutil.Veth(b, hv, "br0", vm, "eth0")
		hv.IP(b, "addr", "add", subnet+".1/24", "dev", "br0")
		hv.IP(b, "link", "set", "br0", "up")
		vm.IP(b, "addr", "add", subnet+".2/24", "dev", "eth0")
		vm.IP(b, "link", "set", "eth0", "up")
		vm.IP(b, "route", "add", "default", "via", subnet+".1")
		if out, err := hv.Exec("sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
			b.Fatalf("forwarding: %v %s", err, out)
		}
		if url == "" {
			url = testutil.TailnetControl(b, tools, lap, lan+".2", "0.0.0.0/0")
		}
		node := testutil.StartTailnetNode(b, tools, hv, url, mode == "userspace")
		node.Up(b, url, "hv-"+mode, "--advertise-routes="+subnet+".0/24")
		routers = append(routers, &router{name: mode, node: node, server: serve(b, vm, subnet+".2:5001")})
	}
	laptop := testutil.StartTailnetNode(b, tools, lap, url, false)
	laptop.Up(b, url, "laptop", "--accept-routes")
	for _, r := range routers {
		deadline := time.Now().Add(time.Minute)
		for len(laptop.Status(b).PeerRoutes("hv-"+r.name)) == 0 {
			if time.Now().After(deadline) {
				b.Fatalf("no route through hv-%s", r.name)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if out, err := laptop.CLI("ping", "-c", "20", "--until-direct", "hv-"+r.name); err != nil {
			b.Fatalf("no direct path to hv-%s: %v\n%s", r.name, err, out)
		}
	}
	const size = 64 << 20
	const rounds = 7
	for range rounds {
		for _, r := range routers {
			start := time.Now()
			n := download(b, lap, r.server)
			if n != size {
				b.Fatalf("%s: %d bytes, want %d", r.name, n, size)
			}
			r.samples = append(r.samples, float64(n)/1e6/time.Since(start).Seconds())
		}
	}
	var med []float64
	for _, r := range routers {
		slices.Sort(r.samples)
		m := r.samples[len(r.samples)/2]
		med = append(med, m)
		rss, hwm := memory(b, r.node.PID())
		b.ReportMetric(m, r.name+"-MB/s")
		b.ReportMetric(rss, r.name+"-RSS-MiB")
		b.ReportMetric(hwm, r.name+"-peak-MiB")
		b.Logf("%s: median %.1f MB/s over %d rounds of %d MiB (all %v), tailscaled RSS %.1f MiB, peak %.1f MiB", r.name, m, rounds, size>>20, r.samples, rss, hwm)
	}
	b.ReportMetric(med[0]/med[1], "tun/userspace")
}

// serve listens on addr inside ns and writes 64 MiB to each connection.
func serve(b *testing.B, ns *testutil.Netns, addr string) string {
	var ln net.Listener
	ns.Do(b, func() {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			b.Fatal(err)
		}
	})
	b.Cleanup(func() { ln.Close() })
	buf := make([]byte, 1<<20)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for range 64 {
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	return addr
}

// download reads everything addr sends, from inside ns.
func download(b *testing.B, ns *testutil.Netns, addr string) int64 {
	var c net.Conn
	ns.Do(b, func() {
		var err error
		if c, err = net.DialTimeout("tcp", addr, 10*time.Second); err != nil {
			b.Fatal(err)
		}
	})
	defer c.Close()
	n, err := io.Copy(io.Discard, c)
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// memory is a process's VmRSS and VmHWM in MiB.
func memory(b *testing.B, pid int) (rss, hwm float64) {
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(s), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb / 1024
		case "VmHWM:":
			hwm = kb / 1024
		}
	}
	return rss, hwm
}
