// Command pullbench measures pulling a many-layer image into the store from
// go-containerregistry's registry served on loopback, with a fixed delay
// added to every request (standing in for a remote registry's round trip):
// layers fetched concurrently against one layer at a time (fetch, unpack,
// next), alternated in one run, and then a second name for the same image
// (as a second VM on it), which copies nothing. With -cosign, the image
// is signed by cosign and pulls that check the signature (an image
// policy) alternate with pulls that do not.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"microvm.dev/microvm/internal/store"
)

func main() {
	layers := flag.Int("layers", 69, "layers in the image")
	totalMB := flag.Int("mb", 200, "total uncompressed size in MB")
	delay := flag.Duration("delay", 20*time.Millisecond, "delay added to every registry request")
	rounds := flag.Int("rounds", 3, "pulls of each kind")
	jobs := flag.Int("jobs", 8, "concurrent layer fetches")
	profile := flag.String("cpuprofile", "", "write a CPU profile of the whole run here")
	dir := flag.String("dir", "/var/tmp", "where the rounds' stores (or, with -fresh-fs, the filesystem image) are made; removed at the end")
	cosign := flag.String("cosign", "", "a cosign binary: sign the image with a key pair of its own and alternate concurrent pulls with and without checking that signature (an imagePolicy's cost) instead of comparing fetchers")
	freshFS := flag.Bool("fresh-fs", true, "pull into a freshly made ext4 (a sparse image on a loop device, mkfs.ext4's defaults, as a host's /var/lib usually is) instead of -dir's own filesystem")
	flag.Parse()
	if *profile != "" {
		f, err := os.Create(*profile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "pullbench:", err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	if err := run(*dir, *freshFS, *layers, *totalMB, *delay, *rounds, *jobs, *cosign); err != nil {
		fmt.Fprintln(os.Stderr, "pullbench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

// slow adds a delay to every request.
type slow struct {
	rt    http.RoundTripper
	delay time.Duration
	n     atomic.Int64
	bytes atomic.Int64
}

func (s *slow) RoundTrip(r *http.Request) (*http.Response, error) {
	time.Sleep(s.delay)
	s.n.Add(1)
	resp, err := s.rt.RoundTrip(r)
	if err == nil && resp.ContentLength > 0 && r.Method == http.MethodGet {
		s.bytes.Add(resp.ContentLength)
	}
	return resp, err
}

func run(dir string, freshFS bool, nLayers, totalMB int, delay time.Duration, rounds, jobs int, cosign string) error {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	ref := strings.TrimPrefix(srv.URL, "http://") + "/sandbox:latest"
	t0 := time.Now()
	img, err := build(nLayers, totalMB)
	if err != nil {
		return err
	}
	parsed, _ := name.ParseReference(ref)
	if err := remote.Write(parsed, img); err != nil {
		return err
	}
	fmt.Printf("image: %d layers, %d MB uncompressed, pushed in %s; %s added per request\n", nLayers, totalMB, time.Since(t0).Round(time.Millisecond), delay)

	work, cleanup, err := workDir(dir, freshFS)
	if err != nil {
		return err
	}
	defer cleanup()
	if cosign != "" {
		return compareVerified(work, freshFS, ref, cosign, img, jobs, rounds, delay)
	}
	var conc, seq []time.Duration
	for i := range rounds * 2 {
		j := jobs
		if i%2 == 1 {
			j = 1
		}
		round := filepath.Join(work, fmt.Sprint(i))
		d, err := pullOnce(round, ref, j, delay, i == rounds*2-2, img, nil)
		if err != nil {
			return err
		}
		if freshFS {
			os.RemoveAll(round) // a journaled ext4 reuses freed inodes at no cost
		}
		if j == 1 {
			seq = append(seq, d)
		} else {
			conc = append(conc, d)
		}
	}
	mc, ms := median(conc), median(seq)
	fmt.Printf("concurrent (%d jobs): median %s\none layer at a time:  median %s\nratio: %.1fx\n", jobs, mc, ms, float64(ms)/float64(mc))
	return nil
}

// workDir returns the directory the rounds' stores go in and what removes
// it. With fresh, it is a new ext4 with a journal, mounted from a sparse
// image under dir: these machines' root is ext4 without a journal, on
// which the kernel will not reuse an inode freed in the last minutes and
// reads each such inode to tell, so a filesystem that has just had a few
// thousand files deleted (by earlier rounds, runs or builds) made file
// creation, and so the pulls, up to several times slower from one run to
// the next. Without fresh, the stores stay until the run ends.
func workDir(dir string, fresh bool) (string, func(), error) {
	work, err := os.MkdirTemp(dir, "pullbench-")
	if err != nil {
		return "", nil, err
	}
	if !fresh {
		return work, func() { os.RemoveAll(work) }, nil
	}
	img, mnt := filepath.Join(work, "fs.img"), filepath.Join(work, "mnt")
	run := func(argv ...string) (string, error) {
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("%s: %v: %s (run as root, or give -fresh-fs=false)", strings.Join(argv, " "), err, out)
		}
		return strings.TrimSpace(string(out)), nil
	}
	var dev string
	// The loop device does direct I/O on its image, so what the rounds
	// write is not cached (and written back) a second time underneath.
	for _, argv := range [][]string{{"truncate", "-s", "16G", img}, {"mkfs.ext4", "-q", "-F", img}, {"mkdir", mnt},
		{"losetup", "--find", "--show", "--direct-io=on", img}, {"mount", "LOOP", mnt}} {
		if argv[1] == "LOOP" {
			argv[1] = dev
		}
		out, err := run(argv...)
		if err != nil {
			if dev != "" {
				run("losetup", "-d", dev)
			}
			os.RemoveAll(work)
			return "", nil, err
		}
		if argv[0] == "losetup" {
			dev = out
		}
	}
	return mnt, func() {
		if _, err := run("umount", mnt); err != nil {
			fmt.Fprintln(os.Stderr, "pullbench:", err)
		}
		run("losetup", "-d", dev)
		os.RemoveAll(work)
	}, nil
}

// pullOnce pulls ref into a fresh store at dir with jobs fetchers and
// returns the time taken; the page cache is written back before and after,
// so rounds do not slow each other down. With second, it also pulls the
// image again under its digest (a second VM on the image).
func pullOnce(dir, ref string, jobs int, delay time.Duration, second bool, img v1.Image, verify store.VerifyFunc) (time.Duration, error) {
	defer syscall.Sync()
	syscall.Sync()
	s := store.Open(dir)
	tr := &slow{rt: http.DefaultTransport, delay: delay}
	cpu0 := cpuTime()
	start := time.Now()
	if _, err := s.Pull(context.Background(), ref, store.Options{Jobs: jobs, Remote: []remote.Option{remote.WithTransport(tr)}, Verify: verify}); err != nil {
		return 0, err
	}
	d := time.Since(start)
	cpu := cpuTime() - cpu0
	fmt.Printf("  jobs %d: %s (%d requests, %.0f MB fetched; CPU %s, %.1f cores busy)\n", jobs, d.Round(time.Millisecond), tr.n.Load(), float64(tr.bytes.Load())/1e6,
		cpu.Round(time.Millisecond), cpu.Seconds()/d.Seconds())
	if second {
		tr := &slow{rt: http.DefaultTransport, delay: delay}
		blobs := func() int {
			m, _ := filepath.Glob(filepath.Join(dir, "images", "blobs", "sha256", "*"))
			return len(m)
		}
		before := blobs()
		start := time.Now()
		again, err := s.Pull(context.Background(), strings.Replace(ref, "sandbox:latest", "sandbox@"+digest(img), 1), store.Options{Remote: []remote.Option{remote.WithTransport(tr)}})
		if err != nil {
			return 0, err
		}
		fmt.Printf("  second name for the same image: %s, %d requests, %.2f MB fetched, %d new blobs, tree %s shared\n",
			time.Since(start).Round(time.Millisecond), tr.n.Load(), float64(tr.bytes.Load())/1e6, blobs()-before, again.ID[:12])
	}
	return d, nil
}

// cpuTime is the CPU time (user and system) this process has used: the
// client's and the in-process registry's together.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func digest(img v1.Image) string {
	d, _ := img.Digest()
	return d.String()
}

// build makes an image of n layers of incompressible files.
func build(n, totalMB int) (v1.Image, error) {
	rng := rand.New(rand.NewPCG(1, 2))
	per := totalMB << 20 / n
	img := empty.Image
	for i := range n {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("layer%02d/", i), Typeflag: tar.TypeDir, Mode: 0o755})
		for f, left := 0, per; left > 0; f++ {
			size := min(left, 256<<10)
			data := make([]byte, size)
			for k := 0; k+8 <= len(data); k += 8 {
				v := rng.Uint64()
				for b := range 8 {
					data[k+b] = byte(v >> (8 * b))
				}
			}
			tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("layer%02d/f%03d", i, f), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(size)})
			tw.Write(data)
			left -= size
		}
		tw.Close()
		b := buf.Bytes()
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
			tarball.WithCompressionLevel(gzip.BestSpeed))
		if err != nil {
			return nil, err
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			return nil, err
		}
	}
	return mutate.Config(img, v1.Config{Entrypoint: []string{"/bin/sh"}})
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2].Round(time.Millisecond)
}
