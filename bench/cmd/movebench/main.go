// Command movebench measures the data part of moving a VM between hosts:
// a volume streamed from one daemon's peer identity to another's over TLS
// on loopback (transfer.Send into transfer.Receive, the digest checked),
// against `rsync --sparse` (what a user would copy a volume image with),
// run through a pipe to its own server, alternated in one run, for
// sparse volumes of each size with each share of them written (random
// data, which no compression shrinks). It reports the median time and the
// bytes each sent against the bytes the volume has allocated.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/peer"
	"microvm.dev/microvm/internal/transfer"
)

func main() {
	dir := flag.String("dir", "/var/tmp/movebench", "where the volumes are made (a real disk)")
	sizes := flag.String("sizes", "1G,8G", "volume sizes")
	fills := flag.String("fills", "10,60", "percent of each volume written")
	rounds := flag.Int("rounds", 3, "alternating rounds")
	flag.Parse()
	if _, err := exec.LookPath("rsync"); err != nil {
		log.Fatal("rsync is needed for the comparison (apt install rsync)")
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(*dir)
	srv, url, client := server(*dir)
	defer srv.Close()
	fmt.Printf("| volume | written | allocated | microvm | sent | rsync --sparse | sent | ratio |\n|---|---|---|---|---|---|---|---|\n")
	for _, s := range strings.Split(*sizes, ",") {
		var size config.Size
		if err := size.UnmarshalText([]byte(s)); err != nil {
			log.Fatal(err)
		}
		for _, f := range strings.Split(*fills, ",") {
			pct, _ := strconv.Atoi(f)
			src := filepath.Join(*dir, "src.img")
			alloc := makeVolume(src, int64(size), pct)
			var ours, theirs []time.Duration
			var oursSent, theirsSent int64
			for range *rounds {
				d, sent := sendOurs(client, url, src)
				ours, oursSent = append(ours, d), sent
				d, sent = sendRsync(*dir, src)
				theirs, theirsSent = append(theirs, d), sent
			}
			mo, mt := median(ours), median(theirs)
			fmt.Printf("| %s | %d%% | %s | %.2f s | %s | %.2f s | %s | %.2fx |\n", s, pct, human(alloc),
				mo.Seconds(), human(oursSent), mt.Seconds(), human(theirsSent), mt.Seconds()/mo.Seconds())
			os.Remove(src)
		}
	}
}

// makeVolume writes a sparse file of size with pct of it random data, in
// 4 MiB runs spread over it, and returns its allocated bytes.
func makeVolume(path string, size int64, pct int) int64 {
	f, err := os.Create(path)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	const run = 4 << 20
	buf := make([]byte, run)
	runs := size / run
	for i := int64(0); i < runs; i++ {
		// Run i is written when the written share crosses a whole run
		// there: pct of the runs, spread evenly.
		if (i+1)*int64(pct)/100 == i*int64(pct)/100 {
			continue
		}
		rand.Read(buf)
		if _, err := f.WriteAt(buf, i*run); err != nil {
			log.Fatal(err)
		}
	}
	f.Truncate(size)
	f.Sync()
	var st syscall.Stat_t
	syscall.Stat(path, &st)
	return st.Blocks * 512
}

// server is a peer daemon's receiving end: TLS with its own identity,
// trusting the sender's key; it writes what comes with transfer.Receive.
func server(dir string) (*http.Server, string, *http.Client) {
	ida, err := peer.Load(filepath.Join(dir, "peer-a"))
	if err != nil {
		log.Fatal(err)
	}
	idb, err := peer.Load(filepath.Join(dir, "peer-b"))
	if err != nil {
		log.Fatal(err)
	}
	trust := func(key string) (string, bool) { return "a", key == ida.Key }
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /in", func(w http.ResponseWriter, r *http.Request) {
		dst := filepath.Join(dir, "dst.img")
		os.Remove(dst)
		st, err := transfer.Receive(r.Body, dst)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprint(w, st.SHA256)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: mux, TLSConfig: idb.ServerTLS(trust)}
	go srv.ServeTLS(ln, "", "")
	return srv, "https://" + ln.Addr().String() + "/in", ida.Client(idb.Key, 0)
}

func sendOurs(c *http.Client, url, src string) (time.Duration, int64) {
	dropCaches()
	t0 := time.Now()
	f, err := os.Open(src)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	pr, pw := io.Pipe()
	done := make(chan transfer.Stats, 1)
	go func() {
		st, err := transfer.Send(pw, f)
		pw.CloseWithError(err)
		done <- st
	}()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPut, url, pr)
	resp, err := c.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	st := <-done
	if resp.StatusCode != 200 || string(body) != st.SHA256 {
		log.Fatalf("the receiver: %s %s", resp.Status, body)
	}
	return time.Since(t0), st.Wire
}

var sentRE = regexp.MustCompile(`Total bytes sent: ([0-9,]+)`)

// sendRsync copies src with rsync --sparse through a pipe to its own
// server (the remote shell a script that runs it here), as it would over
// SSH, and returns the time and the bytes it sent.
func sendRsync(dir, src string) (time.Duration, int64) {
	rsh := filepath.Join(dir, "rsh")
	os.WriteFile(rsh, []byte("#!/bin/sh\nshift\nexec \"$@\"\n"), 0o755)
	dst := filepath.Join(dir, "rsync-dst.img")
	os.Remove(dst)
	dropCaches()
	t0 := time.Now()
	out, err := exec.Command("rsync", "--sparse", "--stats", "--whole-file", "-e", rsh, src, "local:"+dst).CombinedOutput()
	d := time.Since(t0)
	if err != nil {
		log.Fatalf("rsync: %v\n%s", err, out)
	}
	m := sentRE.FindSubmatch(out)
	if m == nil {
		log.Fatalf("rsync --stats: %s", out)
	}
	n, _ := strconv.ParseInt(string(bytes.ReplaceAll(m[1], []byte(","), nil)), 10, 64)
	return d, n
}

// dropCaches starts each copy from the disk, as a move of a volume not
// read lately does.
func dropCaches() {
	exec.Command("sync").Run()
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o644)
}

func median(ds []time.Duration) time.Duration {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)/2]
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d B", n)
}
