// Command migratebench measures moving a running VM between two real
// daemons (run as root, with bin/microvm and bin/microvm-init and a store
// holding the base image): for volumes of each size with each share of
// them written (random data, in files of the volume's own ext4), cold,
// saved and live moves alternated, back and forth between the daemons in
// one run, the median of each reported. Each move's time is the `microvm
// move` command's; the downtime is what a
// client of the guest sees: the bench connects to the guest's SSH port on
// both hosts every 10 ms, and the downtime is from the last answer on the
// host it leaves to the first on the host it reaches. The bytes sent are
// the move's own account, against the volume's allocated size. The
// daemons talk over loopback (--peer-listen 127.0.0.1); each VM network is
// in a namespace of its own.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"microvm.dev/microvm/bench/lab"
	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/vmssh"
)

func main() {
	bin := flag.String("bin", "bin", "directory holding microvm and microvm-init")
	store := flag.String("store", "", "store directory holding base/")
	sizes := flag.String("sizes", "1G,8G", "volume sizes")
	fills := flag.String("fills", "10,60", "percent of each volume written")
	modes := flag.String("modes", "cold,saved,live", "move modes, in the order run")
	rounds := flag.Int("rounds", 3, "rounds of every mode, alternated")
	keep := flag.String("keep-failed", "", "a directory to copy each host's daemon log and its logs of VMs that did not come up there (failed-moves/) into, before the hosts go")
	flag.Parse()
	if err := run(*bin, *store, strings.Split(*sizes, ","), strings.Split(*fills, ","), strings.Split(*modes, ","), *rounds, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "migratebench:", err)
		os.Exit(1)
	}
}

// host is one daemon of the pair.
type host struct {
	name string
	l    *lab.Lab
	port int
	key  string
}

func run(bin, store string, sizes, fills, modes []string, rounds int, keep string) error {
	var hosts [2]*host
	// Interrupted, the daemons, their VMs and namespaces go all the same.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		for _, h := range hosts {
			if h != nil {
				h.l.Close()
			}
		}
		os.Exit(1)
	}()
	for i, name := range []string{"a", "b"} {
		l, err := lab.New("mvb"+name, bin, store)
		if err != nil {
			return err
		}
		defer l.Close()
		if keep != "" {
			defer keepFailed(l.State, filepath.Join(keep, name))
		}
		out, err := l.CLI("peer", "key")
		if err != nil {
			return fmt.Errorf("peer key: %v: %s", err, out)
		}
		hosts[i] = &host{name: name, l: l, port: 17444 + i, key: strings.TrimSpace(string(out))}
	}
	peers := "peers:\n"
	for _, h := range hosts {
		peers += fmt.Sprintf("  %s: { address: \"127.0.0.1:%d\", key: %s }\n", h.name, h.port, h.key)
	}
	for _, h := range hosts {
		file := filepath.Join(h.l.State, "infra.yaml")
		if err := os.WriteFile(file, []byte(peers+"vms: {}\n"), 0o644); err != nil {
			return err
		}
		if err := h.l.StartDaemon("--config", file, "--peer-listen", fmt.Sprintf("127.0.0.1:%d", h.port), "--host-name", h.name); err != nil {
			return err
		}
	}
	fmt.Println("| volume | written | allocated | mode | move | downtime | volume data sent | on the wire (all files) |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, s := range sizes {
		var size config.Size
		if err := size.UnmarshalText([]byte(s)); err != nil {
			return err
		}
		for _, f := range fills {
			var pct int
			fmt.Sscan(f, &pct)
			vm := fmt.Sprintf("m%s%d", strings.ToLower(s), pct)
			alloc, err := makeVolume(hosts[0].l.State, vm, int64(size), pct)
			if err != nil {
				return err
			}
			entry := fmt.Sprintf("  %s: { index: 1, memory: 256M, store: block, stopTimeout: 20s, volumes: [{ name: data, mountPoint: /data, size: %s }] }\n", vm, s)
			put := filepath.Join(hosts[0].l.State, vm+".yaml")
			os.WriteFile(put, []byte(peers+"vms:\n"+entry), 0o644)
			if out, err := hosts[0].l.CLI("apply", "-f", put); err != nil {
				return fmt.Errorf("apply %s: %v: %s", vm, err, out)
			}
			if err := waitRunning(hosts[0], vm, 3*time.Minute); err != nil {
				return err
			}
			from, to := hosts[0], hosts[1]
			runs := map[string][]moved{}
			for range rounds {
				for _, mode := range modes {
					r, err := move(from, to, vm, mode)
					if err != nil {
						for _, h := range hosts {
							for _, f := range []string{"daemon.log", "vms/" + vm + "/vmm.log", "vms/" + vm + "/console.log"} {
								b, _ := os.ReadFile(filepath.Join(h.l.State, f))
								fmt.Fprintf(os.Stderr, "== %s: %s\n%s\n", h.name, f, tail(string(b), 15))
							}
						}
						return err
					}
					runs[mode] = append(runs[mode], r)
					from, to = to, from
				}
			}
			for _, mode := range modes {
				var took, down []float64
				label, fell, went := mode, 0, ""
				for _, r := range runs[mode] {
					took, down = append(took, r.took.Seconds()), append(down, r.down.Seconds())
					if r.res.Mode != mode {
						fell, went = fell+1, r.res.Mode
						fmt.Fprintf(os.Stderr, "%s %s: moved %s: %s\n", vm, mode, r.res.Mode, r.res.Fallback)
					}
				}
				if fell > 0 {
					label = fmt.Sprintf("%s (%d of %d went %s)", mode, fell, len(runs[mode]), went)
				}
				r := runs[mode][len(runs[mode])-1]
				fmt.Printf("| %s | %d%% | %s | %s | %.1f s | %.2f s | %s | %s |\n", s, pct, human(alloc), label,
					lab.Median(took), lab.Median(down), human(r.volumeData), human(r.wire))
			}
			// Gone from both: the next size starts anew.
			from.l.CLI("rm", vm)
			empty := filepath.Join(from.l.State, "empty.yaml")
			os.WriteFile(empty, []byte(peers+"vms: {}\n"), 0o644)
			for _, h := range hosts {
				h.l.CLI("apply", "-f", empty)
				os.RemoveAll(filepath.Join(h.l.State, "vms", vm))
			}
		}
	}
	return nil
}

// moved is one move's figures.
type moved struct {
	res              apitypes.MoveResult
	took, down       time.Duration
	volumeData, wire int64
}

// move moves vm from one host to the other in mode while the guest's SSH
// port is probed on both.
func move(from, to *host, vm, mode string) (moved, error) {
	var m moved
	st, err := status(from, vm)
	if err != nil {
		return m, err
	}
	addr := st.Spec.Net.Address.String() + ":22"
	p := startProbe([2]string{"/run/netns/" + from.l.NS, "/run/netns/" + to.l.NS}, addr)
	t0 := time.Now()
	out, err := from.l.CLI("-o", "json", "move", vm, "--to", to.name, "--mode", mode)
	m.took = time.Since(t0)
	if err != nil {
		p.stop()
		return m, fmt.Errorf("move %s --mode %s: %v: %s", vm, mode, err, out)
	}
	if err := json.Unmarshal(out, &m.res); err != nil {
		p.stop()
		return m, fmt.Errorf("move %s: %v: %s", vm, err, out)
	}
	if err := waitRunning(to, vm, 3*time.Minute); err != nil {
		p.stop()
		return m, err
	}
	m.down, err = p.downtime(time.Minute)
	if err != nil {
		return m, fmt.Errorf("%s --mode %s: %w", vm, mode, err)
	}
	for _, f := range m.res.Files {
		if f.Name == "data.img" || strings.HasPrefix(f.Name, "volumes") {
			m.volumeData += max(f.Data, f.Wire)
		}
		m.wire += f.Wire
	}
	return m, nil
}

// probe connects to the guest's address in each host's namespace in turn.
type probe struct {
	mu       sync.Mutex
	lastFrom time.Time // the last answer where it was
	firstTo  time.Time // the first answer where it goes, after that
	done     chan struct{}
	wg       sync.WaitGroup
}

func startProbe(ns [2]string, addr string) *probe {
	p := &probe{done: make(chan struct{})}
	for i, path := range ns {
		p.wg.Go(func() {
			for {
				select {
				case <-p.done:
					return
				default:
				}
				if answers(path, addr) {
					now := time.Now()
					p.mu.Lock()
					switch {
					case i == 0 && p.firstTo.IsZero():
						p.lastFrom = now
					case i == 1 && !p.lastFrom.IsZero() && p.firstTo.IsZero():
						p.firstTo = now
					}
					p.mu.Unlock()
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	return p
}

// answers says whether addr takes a TCP connection within 30 ms.
func answers(ns, addr string) bool {
	c, err := vmssh.DialIn(ns, addr, 30*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func (p *probe) stop() {
	close(p.done)
	p.wg.Wait()
}

// downtime waits until the guest answered where it went, then stops.
func (p *probe) downtime(timeout time.Duration) (time.Duration, error) {
	defer p.stop()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		p.mu.Lock()
		last, first := p.lastFrom, p.firstTo
		p.mu.Unlock()
		if !first.IsZero() {
			if last.IsZero() {
				return 0, fmt.Errorf("the guest never answered where it was")
			}
			return first.Sub(last), nil
		}
	}
	return 0, fmt.Errorf("the guest did not answer where it went within %s", timeout)
}

func status(h *host, vm string) (apitypes.VMStatus, error) {
	var st apitypes.VMStatus
	out, err := h.l.CLI("-o", "json", "status", vm)
	if err != nil {
		return st, fmt.Errorf("status %s on %s: %v: %s", vm, h.name, err, out)
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return st, fmt.Errorf("status %s on %s: %v", vm, h.name, err)
	}
	return st, nil
}

func waitRunning(h *host, vm string, timeout time.Duration) error {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if st, err := status(h, vm); err == nil && st.State == apitypes.Running {
			return nil
		}
	}
	st, _ := status(h, vm)
	return fmt.Errorf("%s not running on %s after %s: %s %s", vm, h.name, timeout, st.State, st.Failure)
}

// makeVolume makes vm's volume data (size bytes) in the state directory,
// before the VM is first started: an ext4 file system (as microvm formats
// one) holding files of random data for pct of it. It returns the file's
// allocated bytes.
func makeVolume(stateDir, vm string, size int64, pct int) (int64, error) {
	dir := filepath.Join(stateDir, "vms", vm)
	fill := filepath.Join(stateDir, "fill-"+vm)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, err
	}
	if err := os.MkdirAll(fill, 0o755); err != nil {
		return 0, err
	}
	defer os.RemoveAll(fill)
	want := size * int64(pct) / 100
	rng := rand.NewChaCha8([32]byte{byte(pct), byte(size >> 30)})
	buf := make([]byte, 64<<20)
	for i := 0; int64(i)*int64(len(buf)) < want; i++ {
		rng.Read(buf)
		n := min(int64(len(buf)), want-int64(i)*int64(len(buf)))
		if err := os.WriteFile(filepath.Join(fill, fmt.Sprintf("f%03d", i)), buf[:n], 0o644); err != nil {
			return 0, err
		}
	}
	img := filepath.Join(dir, "data.img")
	f, err := os.Create(img)
	if err != nil {
		return 0, err
	}
	f.Truncate(size)
	f.Close()
	if out, err := exec.Command("mkfs.ext4", "-F", "-q", "-L", "data", "-m", "0", "-d", fill, img).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("mkfs.ext4: %v: %s", err, out)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(img, &st); err != nil {
		return 0, err
	}
	return st.Blocks * 512, nil
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d KiB", n>>10)
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// keepFailed copies a host's daemon log, and its logs of VMs that did
// not come up there (state.Dir.FailedMovesDir), into dir.
func keepFailed(stateDir, dir string) {
	paths := []string{filepath.Join(stateDir, "daemon.log")}
	failed, _ := filepath.Glob(filepath.Join(stateDir, "failed-moves", "*"))
	for _, path := range append(paths, failed...) {
		b, err := os.ReadFile(path)
		if err == nil && os.MkdirAll(dir, 0o755) == nil {
			os.WriteFile(filepath.Join(dir, filepath.Base(path)), b, 0o644)
		}
	}
}
