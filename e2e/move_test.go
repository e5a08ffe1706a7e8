package e2e

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/generation"
	"microvm.dev/microvm/internal/testutil"
)

// TestMoveBetweenHosts: two daemons in two namespaces joined by a LAN,
// each serving the other on its LAN address (--peer-listen), trusting
// each other by the keys `microvm peer key` printed, named in the files'
// peers. A VM with 128 MiB of data on a volume:
//   - a move whose target daemon is SIGKILLed half-way through the
//     transfer leaves the VM running on a with its data, and nothing on b
//     once its daemon is back;
//   - a move to a host the file does not name, to one whose key in the
//     file is another, and to one without room for its data (c, its state
//     directory a 64 MiB tmpfs) are refused with the VM running on;
//   - `move db --to b` moves it live (store: block): on b its data is
//     there (checksum), a process started on a still runs, and a holds
//     nothing of it;
//   - `drain --mode saved` on b moves it back to a, whose file names it,
//     with its state saved: only the volume's allocated ranges were sent,
//     the process still runs; and web, b's VM whose store (virtiofs or
//     9p) moves neither live nor saved, moves cold, saying why; b is
//     empty;
//   - db moves to b again: the read-only disks it runs on (the store
//     image and module tree, which b kept from the first move) are not
//     sent again but linked from b's cache, and it runs there.
func TestMoveBetweenHosts(t *testing.T) {
	p := newHostPair(t)
	a, b, host, db, peers, ka, kb := p.a, p.b, p.host, p.db, p.peers, p.ka, p.kb
	fileA := a.writeFile(host + peers(kb) + db)
	// web, on b, has the default store (virtiofs or 9p), which QEMU moves
	// neither live nor saved.
	fileB := b.writeFile(host + peers(kb) + "vms:\n  web: { index: 2, memory: 128M }\n")
	start := func(l *daemonLab, name, file string) { p.start(l, name, "--config", file) }
	start(a, "a", fileA)
	start(b, "b", fileB)
	a.waitFor("db running on a", 3*time.Minute, allRunning("db"))
	dataIs := p.writeData(a)

	// Refused before anything stops: a host not in the peers, and b while
	// a's file names another key for it.
	if out, err := a.cli("move", "db", "--to", "c"); err == nil || !strings.Contains(out, "no such host in the file's peers") {
		t.Errorf("move to a host not in the peers: %v\n%s", err, out)
	}
	if out, err := a.cli("apply", "-f", a.writeFile(host+peers(ka)+db)); err != nil {
		t.Fatalf("apply with another key for b: %v\n%s", err, out)
	}
	if out, err := a.cli("move", "db", "--to", "b"); err == nil || !strings.Contains(out, "not one the file's peers name") {
		t.Errorf("move to a host whose key is not the file's: %v\n%s", err, out)
	}
	// c, on a LAN of its own with a, has too little room for db's data:
	// refused before db stops, nothing left on c.
	c := newDaemonLab(t, "mvc")
	c.inNS = true
	smallStateDir(t, c, "64m")
	testutil.Veth(t, a.ns, "lan1", c.ns, "lan0")
	a.ns.IP(t, "addr", "add", "172.31.11.1/24", "dev", "lan1")
	a.ns.IP(t, "link", "set", "lan1", "up")
	c.ns.IP(t, "addr", "add", "172.31.11.2/24", "dev", "lan0")
	c.ns.IP(t, "link", "set", "lan0", "up")
	kc, err := c.cli("peer", "key")
	if err != nil {
		t.Fatalf("peer key on c: %v\n%s", err, kc)
	}
	withC := peers(kb) + fmt.Sprintf("  c: { address: \"172.31.11.2:7444\", key: %s }\n", strings.TrimSpace(kc))
	c.startDaemon(c.writeFile(host+withC+"vms: {}\n"), "--peer-listen", "172.31.11.2:7444", "--host-name", "c")
	if out, err := a.cli("apply", "-f", a.writeFile(host+withC+db)); err != nil {
		t.Fatalf("apply with c: %v\n%s", err, out)
	}
	if out, err := a.cli("move", "db", "--to", "c"); err == nil || !regexp.MustCompile(`host c has \d+ bytes free, the VM's data needs \d+`).MatchString(out) {
		t.Errorf("move to a host without room: %v\n%s", err, out)
	}
	if entries, _ := os.ReadDir(filepath.Join(c.state, "vms")); len(entries) != 0 {
		t.Errorf("c keeps %v after the refused move", entries)
	}
	if st := a.list()["db"]; st.State != apitypes.Running {
		t.Fatalf("db after the refused moves: %s", st.State)
	}

	// b's daemon is killed while db's volume streams to it.
	moved := make(chan string, 1)
	go func() {
		out, err := a.cli("move", "db", "--to", "b", "--mode", "saved")
		moved <- fmt.Sprintf("%v: %s", err, out)
	}()
	incoming := filepath.Join(b.state, "incoming", "db", "data.img")
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(5 * time.Millisecond) {
		if fi, err := os.Stat(incoming); err == nil && fi.Size() > 0 {
			break
		}
		select {
		case res := <-moved:
			t.Fatalf("the move ended before b was killed: %s", res)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing arrived on b; a's log:\n%s", tail(a.log(), 20))
		}
	}
	b.daemon.Process.Signal(syscall.SIGKILL)
	b.daemon.Wait()
	if res := <-moved; !strings.Contains(res, "a keeps db and its data, running again") {
		t.Errorf("the move whose target died: %s", res)
	}
	a.waitFor("db running on a again", 3*time.Minute, allRunning("db"))
	dataIs(a, "a after the failed move")
	start(b, "b", fileB)
	for _, path := range []string{filepath.Join(b.state, "incoming"), filepath.Join(b.state, "vms", "db")} {
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("b keeps %s after the failed move (%v)", path, err)
		}
	}

	// The move, live: a process started on a runs on b.
	out, err := a.cli("exec", "db", "--", "sh", "-c", "setsid sleep 100000 </dev/null >/dev/null 2>&1 & echo $!")
	if err != nil {
		t.Fatalf("start a process in db: %v\n%s", err, out)
	}
	pid := strings.TrimSpace(out)
	out, err = a.cli("-o", "json", "move", "db", "--to", "b")
	var res apitypes.MoveResult
	if err != nil || json.Unmarshal([]byte(out), &res) != nil {
		t.Fatalf("move db --to b: %v\n%s", err, out)
	}
	t.Logf("moved: mode %s, %.1f s, downtime %.2f s, boot there: %s, files %+v", res.Mode, res.Seconds, res.Downtime, res.Boot, res.Files)
	if res.To != "b" || res.From != "a" || res.Mode != "live" || !strings.HasPrefix(res.Boot, "resumed running from a") {
		t.Errorf("the move was not a live one, resumed on b: %+v", res)
	}
	b.waitFor("db running on b", 3*time.Minute, allRunning("db"))
	dataIs(b, "b")
	if out, err := b.cli("exec", "db", "--", "kill", "-0", pid); err != nil {
		t.Errorf("the process %s started on a does not run on b: %v\n%s", pid, err, out)
	}
	if _, ok := a.list()["db"]; ok {
		t.Errorf("a still lists db after it moved")
	}
	if _, err := os.Stat(filepath.Join(a.state, "vms", "db")); !os.IsNotExist(err) {
		t.Errorf("a keeps db's directory after the move (%v)", err)
	}

	// Drain b: db goes back to a, whose file names it, with its state
	// saved; web goes cold, saying why, and runs on a as put through the
	// API.
	b.waitFor("web running on b", 3*time.Minute, allRunning("web"))
	out, err = b.cli("-o", "json", "drain", "--mode", "saved")
	var drained apitypes.DrainResult
	if err != nil || json.Unmarshal([]byte(out), &drained) != nil || len(drained.Moved) != 2 {
		t.Fatalf("drain b: %v\n%s", err, out)
	}
	movedVM := map[string]apitypes.MoveResult{}
	for _, m := range drained.Moved {
		movedVM[m.VM] = m
		t.Logf("drained %s: mode %s, %.1f s, downtime %.2f s, fallback %q, boot there: %s", m.VM, m.Mode, m.Seconds, m.Downtime, m.Fallback, m.Boot)
	}
	if w := movedVM["web"]; w.Mode != "cold" || !strings.Contains(w.Fallback, "not saved") || w.To != "a" {
		t.Errorf("web's move: %+v; want a cold one saying why", w)
	}
	res = movedVM["db"]
	sent := map[string]apitypes.MovedFile{}
	for _, f := range res.Files {
		sent[f.Name] = f
	}
	vol := sent["data.img"]
	if vol.Data < 128<<20 || vol.Data > 200<<20 || vol.Size < 512<<20 {
		t.Errorf("drain: sent %+v; want the 128 MiB written sent, not the 512 MiB volume", vol)
	}
	if _, ok := sent["saved.state"]; res.Mode != "saved" || !ok || !strings.HasPrefix(res.Boot, "resumed from the state saved at") {
		t.Errorf("the drain was not a saved move resumed on a: mode %q, boot %q, files %v", res.Mode, res.Boot, slices.Collect(maps.Keys(sent)))
	}
	a.waitFor("db and web running on a after the drain", 3*time.Minute, allRunning("db", "web"))
	dataIs(a, "a after the drain")
	if out, err := a.cli("exec", "db", "--", "kill", "-0", pid); err != nil {
		t.Errorf("the process %s does not run on a after the drain: %v\n%s", pid, err, out)
	}
	if vms := b.list(); len(vms) != 0 {
		t.Errorf("b after the drain: %v", vms)
	}

	// Again to b, which kept the read-only disks of the first move.
	out, err = a.cli("-o", "json", "move", "db", "--to", "b")
	res = apitypes.MoveResult{}
	if err != nil || json.Unmarshal([]byte(out), &res) != nil {
		t.Fatalf("move db --to b again: %v\n%s", err, out)
	}
	t.Logf("moved again: mode %s, %.1f s, downtime %.2f s, files %+v", res.Mode, res.Seconds, res.Downtime, res.Files)
	pins := 0
	for _, f := range res.Files {
		if strings.HasPrefix(f.Name, "pin.") {
			pins++
			if !f.Cached || f.Wire != 0 {
				t.Errorf("the second move to b sent %s again: %+v", f.Name, f)
			}
		}
	}
	if pins == 0 {
		t.Errorf("the second move to b (%s) brought no read-only disks: %+v", res.Mode, res.Files)
	}
	b.waitFor("db running on b again", 3*time.Minute, allRunning("db"))
	dataIs(b, "b after the second move")
}

// hostPair is two daemons in two namespaces joined by a LAN (172.31.10.0/24),
// each to serve the other on its LAN address, with their peer keys.
type hostPair struct {
	t        *testing.T
	a, b     *daemonLab
	ka, kb   string
	host, db string
	peers    func(kb string) string
}

func newHostPair(t *testing.T) *hostPair {
	requireGuestEnv(t)
	testutil.RequireCommand(t, "nsenter")
	p := &hostPair{t: t, a: newDaemonLab(t, "mva"), b: newDaemonLab(t, "mvb")}
	p.a.inNS, p.b.inNS = true, true
	testutil.Veth(t, p.a.ns, "lan0", p.b.ns, "lan0")
	for i, l := range []*daemonLab{p.a, p.b} {
		l.ns.IP(t, "addr", "add", fmt.Sprintf("172.31.10.%d/24", i+1), "dev", "lan0")
		l.ns.IP(t, "link", "set", "lan0", "up")
	}
	key := func(l *daemonLab) string {
		out, err := l.cli("peer", "key")
		if err != nil {
			t.Fatalf("peer key: %v\n%s", err, out)
		}
		return strings.TrimSpace(out)
	}
	p.ka, p.kb = key(p.a), key(p.b)
	p.peers = func(kb string) string {
		return fmt.Sprintf("peers:\n  a: { address: \"172.31.10.1:7444\", key: %s }\n  b: { address: \"172.31.10.2:7444\", key: %s }\n", p.ka, kb)
	}
	p.host = "host: { externalInterface: lan0 }\n"
	p.db = "vms:\n  db: { index: 1, memory: 256M, store: block, stopTimeout: 20s, volumes: [{ name: data, mountPoint: /data, size: 512M }] }\n"
	return p
}

// start starts l's daemon as host name, serving its peer on the LAN.
func (p *hostPair) start(l *daemonLab, name string, extra ...string) {
	l.startDaemon("", append([]string{"--peer-listen", fmt.Sprintf("172.31.10.%d:7444", map[string]int{"a": 1, "b": 2}[name]), "--host-name", name}, extra...)...)
}

// writeData writes 128 MiB of random data in db on l, and returns a check
// that db has it on a host.
func (p *hostPair) writeData(l *daemonLab) func(*daemonLab, string) {
	t := p.t
	out, err := l.cli("exec", "db", "--", "sh", "-c", "head -c 134217728 /dev/urandom > /data/big && sync && sha256sum /data/big")
	if err != nil {
		t.Fatalf("write db's data: %v\n%s", err, out)
	}
	sum := strings.Fields(out)[0]
	return func(l *daemonLab, where string) {
		t.Helper()
		if out, err := l.cli("exec", "db", "--", "sha256sum", "/data/big"); err != nil || !strings.HasPrefix(out, sum) {
			t.Errorf("db's data on %s: %q (%v), want sha256 %s", where, out, err, sum)
		}
	}
}

// TestMoveByDeploy: both hosts deploy one repository (--host-name a and
// b, the file naming their peers); a commit that changes db's host: from
// a to b moves db (store: block, so live) with its data and a process
// started in it when a deploys it, and b, deploying the same commit
// afterwards, takes the VM over from the move as its file's without
// restarting it. Nothing of db is left on a. Moving it back the other way
// round (the receiving host deploying first) has a wait for the move
// instead of making db on empty volumes.
func TestMoveByDeploy(t *testing.T) {
	testutil.RequireCommand(t, "git")
	p := newHostPair(t)
	a, b := p.a, p.b
	repo := newGitRepo(t)
	on := func(h string) string {
		return p.host + p.peers(p.kb) + "vms:\n  db: { index: 1, host: " + h + ", memory: 256M, store: block, stopTimeout: 20s, volumes: [{ name: data, mountPoint: /data, size: 512M }] }\n"
	}
	repo.push(on("a"), "db on a")
	git := []string{"--git-url", repo.remote, "--git-interval", "1h", "--health-timeout", "2m"}
	p.start(a, "a", git...)
	p.start(b, "b", git...)
	a.waitGeneration(1, 3*time.Minute)
	b.waitGeneration(1, 3*time.Minute)
	a.waitFor("db running on a", 3*time.Minute, allRunning("db"))
	if vms := b.list(); len(vms) != 0 {
		t.Fatalf("b runs %v in generation 1", vms)
	}
	dataIs := p.writeData(a)
	out, err := a.cli("exec", "db", "--", "sh", "-c", "setsid sleep 100000 </dev/null >/dev/null 2>&1 & echo $!")
	if err != nil {
		t.Fatalf("start a process in db: %v\n%s", err, out)
	}
	proc := strings.TrimSpace(out)
	runs := func(l *daemonLab, where string) {
		t.Helper()
		if out, err := l.cli("exec", "db", "--", "kill", "-0", proc); err != nil {
			t.Errorf("the process %s started on a does not run on %s: %v\n%s", proc, where, err, out)
		}
	}

	repo.push(on("b"), "db to b")
	if out, err := a.cli("deploy", "trigger"); err != nil {
		t.Fatalf("deploy trigger on a: %v\n%s", err, out)
	}
	if g := a.waitGeneration(2, 5*time.Minute); g.Status != generation.Succeeded {
		t.Fatalf("a's generation 2: %s %s\n%s", g.Status, g.Error, tail(a.log(), 30))
	}
	b.waitFor("db running on b", 3*time.Minute, allRunning("db"))
	if log := a.log(); !strings.Contains(log, "mode=live") {
		t.Errorf("a's log does not say db moved live:\n%s", tail(log, 20))
	}
	runs(b, "b")
	pid := b.list()["db"].PID
	if out, err := b.cli("deploy", "trigger"); err != nil {
		t.Fatalf("deploy trigger on b: %v\n%s", err, out)
	}
	if g := b.waitGeneration(2, 5*time.Minute); g.Status != generation.Succeeded {
		t.Fatalf("b's generation 2: %s %s\n%s", g.Status, g.Error, tail(b.log(), 30))
	}
	if st := b.list()["db"]; st.PID != pid || st.State != apitypes.Running {
		t.Errorf("db on b after b deployed: pid %d (%s), want it left running as pid %d", st.PID, st.State, pid)
	}
	dataIs(b, "b")
	if _, err := os.Stat(filepath.Join(b.state, "api-vms", "db.yaml")); !os.IsNotExist(err) {
		t.Errorf("db is still held on b as put through the API once b's file names it (%v)", err)
	}
	if _, ok := a.list()["db"]; ok {
		t.Error("a still lists db")
	}
	if _, err := os.Stat(filepath.Join(a.state, "vms", "db")); !os.IsNotExist(err) {
		t.Errorf("a keeps db's directory (%v)", err)
	}

	// Back to a, the receiving host deploying first: a expects db (and
	// makes no empty one), b's deploy moves it there.
	repo.push(on("a"), "db back to a")
	if out, err := a.cli("deploy", "trigger"); err != nil {
		t.Fatalf("deploy trigger on a: %v\n%s", err, out)
	}
	if g := a.waitGeneration(3, 5*time.Minute); g.Status != generation.Succeeded {
		t.Fatalf("a's generation 3: %s %s", g.Status, g.Error)
	}
	if _, ok := a.list()["db"]; ok {
		t.Error("a made db before its move came")
	}
	if out, err := b.cli("deploy", "trigger"); err != nil {
		t.Fatalf("deploy trigger on b: %v\n%s", err, out)
	}
	if g := b.waitGeneration(3, 5*time.Minute); g.Status != generation.Succeeded {
		t.Fatalf("b's generation 3: %s %s\n%s", g.Status, g.Error, tail(b.log(), 30))
	}
	a.waitFor("db running on a again", 3*time.Minute, allRunning("db"))
	dataIs(a, "a after the move back")
	runs(a, "a after the move back")
	if vms := b.list(); len(vms) != 0 {
		t.Errorf("b after db moved back: %v", vms)
	}
}

// smallStateDir puts l's state directory on a tmpfs of size (its links to
// the shared store and cache made again on it), unmounted at the end.
func smallStateDir(t *testing.T, l *daemonLab, size string) {
	t.Helper()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0711", "tmpfs", l.state).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs on %s: %v: %s", l.state, err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", l.state).Run() })
	for _, d := range []string{"store", "cache"} {
		if err := os.Symlink(filepath.Join(shared.dir, d), filepath.Join(l.state, d)); err != nil {
			t.Fatal(err)
		}
	}
}
