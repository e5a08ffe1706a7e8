package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/testutil"
)

// TestMoveBetweenHosts: two daemons in two namespaces joined by a LAN,
// each serving the other on its LAN address (--peer-listen), trusting
// each other by the keys `microvm peer key` printed, named in the files'
// peers. A VM with 128 MiB of data on a volume:
//   - a move whose target daemon is SIGKILLed half-way through the
//     transfer leaves the VM running on a with its data, and nothing on b
//     once its daemon is back;
//   - a move to a host the file does not name, and to one whose key in the
//     file is another, are refused with the VM running on;
//   - `move db --to b` moves it: on b its data is there (checksum), only
//     the allocated ranges were sent, and a holds nothing of it;
//   - `drain` on b moves it back to a, whose file names it: b is empty.
func TestMoveBetweenHosts(t *testing.T) {
	requireGuestEnv(t)
	testutil.RequireCommand(t, "nsenter")
	a, b := newDaemonLab(t, "mva"), newDaemonLab(t, "mvb")
	a.inNS, b.inNS = true, true
	testutil.Veth(t, a.ns, "lan0", b.ns, "lan0")
	for i, l := range []*daemonLab{a, b} {
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
	ka, kb := key(a), key(b)
	peers := func(kb string) string {
		return fmt.Sprintf("peers:\n  a: { address: \"172.31.10.1:7444\", key: %s }\n  b: { address: \"172.31.10.2:7444\", key: %s }\n", ka, kb)
	}
	const db = "vms:\n  db: { index: 1, memory: 256M, stopTimeout: 20s, volumes: [{ name: data, mountPoint: /data, size: 512M }] }\n"
	host := "host: { externalInterface: lan0 }\n"
	fileA := a.writeFile(host + peers(kb) + db)
	fileB := b.writeFile(host + peers(kb) + "vms: {}\n")
	start := func(l *daemonLab, name, file string) {
		l.startDaemon(file, "--peer-listen", fmt.Sprintf("172.31.10.%d:7444", map[string]int{"a": 1, "b": 2}[name]), "--host-name", name)
	}
	start(a, "a", fileA)
	start(b, "b", fileB)
	a.waitFor("db running on a", 3*time.Minute, allRunning("db"))
	out, err := a.cli("exec", "db", "--", "sh", "-c", "head -c 134217728 /dev/urandom > /data/big && sync && sha256sum /data/big")
	if err != nil {
		t.Fatalf("write db's data: %v\n%s", err, out)
	}
	sum := strings.Fields(out)[0]
	dataIs := func(l *daemonLab, where string) {
		t.Helper()
		if out, err := l.cli("exec", "db", "--", "sha256sum", "/data/big"); err != nil || !strings.HasPrefix(out, sum) {
			t.Errorf("db's data on %s: %q (%v), want sha256 %s", where, out, err, sum)
		}
	}

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
	if out, err := a.cli("apply", "-f", a.writeFile(host+peers(kb)+db)); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	if st := a.list()["db"]; st.State != apitypes.Running {
		t.Fatalf("db after the refused moves: %s", st.State)
	}

	// b's daemon is killed while db's volume streams to it.
	moved := make(chan string, 1)
	go func() {
		out, err := a.cli("move", "db", "--to", "b")
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
	for _, p := range []string{filepath.Join(b.state, "incoming"), filepath.Join(b.state, "vms", "db")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("b keeps %s after the failed move (%v)", p, err)
		}
	}

	// The move.
	out, err = a.cli("-o", "json", "move", "db", "--to", "b")
	var res apitypes.MoveResult
	if err != nil || json.Unmarshal([]byte(out), &res) != nil {
		t.Fatalf("move db --to b: %v\n%s", err, out)
	}
	var data, size int64
	for _, f := range res.Files {
		data, size = data+f.Data, size+f.Size
	}
	if res.To != "b" || res.From != "a" || data < 128<<20 || data > 200<<20 || size < 512<<20 {
		t.Errorf("move result: %+v; want the 128 MiB written sent, not the 512 MiB volume", res)
	}
	b.waitFor("db running on b", 3*time.Minute, allRunning("db"))
	dataIs(b, "b")
	if _, ok := a.list()["db"]; ok {
		t.Errorf("a still lists db after it moved")
	}
	if _, err := os.Stat(filepath.Join(a.state, "vms", "db")); !os.IsNotExist(err) {
		t.Errorf("a keeps db's directory after the move (%v)", err)
	}

	// Drain b: db goes back to a, whose file names it.
	if out, err := b.cli("drain"); err != nil {
		t.Fatalf("drain b: %v\n%s", err, out)
	}
	a.waitFor("db running on a after the drain", 3*time.Minute, allRunning("db"))
	dataIs(a, "a after the drain")
	if vms := b.list(); len(vms) != 0 {
		t.Errorf("b after the drain: %v", vms)
	}
}
