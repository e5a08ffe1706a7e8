package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/savestate"
	"microvm.dev/microvm/internal/secrets"
	"microvm.dev/microvm/internal/store"
	"microvm.dev/microvm/internal/testutil"
)

// cloneTemplate is a template whose workload warms up (32 MiB written to
// its in-memory root, its pid recorded) before it serves HTTP, which its
// health check waits for before it is saved.
const cloneTemplate = `defaults: { memory: 256M, stopTimeout: 20s }
vms:
  tpl: { index: 1, store: block, template: true, healthCheck: { http: 8080 }ENV,
         command: ["sh", "-c", "dd if=/dev/urandom of=/root/warm bs=1M count=32 2>/dev/null; echo $$ > /root/workload.pid; mkdir -p /www; echo warm > /www/index.html; exec httpd -f -p 8080 -h /www"] }
`

// TestClonesFromATemplate: real QEMU (TCG) boots a template once, freezes
// its warm workload and saves it with its memory in a file; five clones
// started at once each resume from that state (no boot: the workload's
// pid and warm file are the template's) and come up as themselves: their
// own hostname, address, MAC, SSH host key (microvm exec checks it),
// machine-id and random stream. They cannot reach each other, and a
// write to one's memory shows in no other. A change of the template's
// spec makes a new state while the clones started from the old one keep
// running; a damaged state, or one saved by another microvm-init, is made
// again, never handed to a clone.
func TestClonesFromATemplate(t *testing.T) {
	requireGuestEnv(t)
	l := newDaemonLab(t, "cln")
	file := l.writeFile(strings.Replace(cloneTemplate, "ENV", "", 1))
	l.startDaemon(file)
	if out, err := l.cli("apply", "-f", file); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	names := []string{"c1", "c2", "c3", "c4", "c5"}
	t0 := time.Now()
	out, err := l.cli(append([]string{"clone", "tpl"}, names...)...)
	if err != nil {
		t.Fatalf("clone: %v\n%s\ndaemon log:\n%s", err, out, tail(l.log(), 30))
	}
	t.Logf("5 clones (the template made first) in %s:\n%s", time.Since(t0).Round(time.Millisecond), out)
	record := func() launch.TemplateRecord {
		t.Helper()
		var rec launch.TemplateRecord
		b, err := os.ReadFile(filepath.Join(l.state, "vms", "tpl", "template", "template.json"))
		if err != nil || json.Unmarshal(b, &rec) != nil {
			t.Fatalf("the template's record: %v %s", err, b)
		}
		return rec
	}
	rec := record()
	if !strings.HasPrefix(rec.Init, "initramfs-") {
		t.Errorf("the template's record names no initramfs base: %+v", rec)
	}
	t.Logf("template: boot to ready and healthy %.1fs, save %.2fs", rec.BootSeconds, rec.SaveSeconds)

	exec := func(vm, cmd string) string {
		t.Helper()
		out, err := l.cli("exec", vm, "--", "sh", "-c", cmd)
		if err != nil {
			t.Fatalf("exec in %s: %v\n%s", vm, err, out)
		}
		return strings.TrimSpace(out)
	}
	seen := map[string]map[string]string{}
	facts := "cat /proc/sys/kernel/hostname /etc/machine-id /sys/class/net/eth0/address /root/workload.pid; md5sum /root/warm | cut -c1-32; head -c 16 /dev/urandom | md5sum | cut -c1-32; /run/microvm/init probe | grep ^hostname=; wget -qO- http://127.0.0.1:8080/"
	vms := l.list()
	for i, vm := range names {
		st := vms[vm]
		if st.State != apitypes.Running || !strings.HasPrefix(st.Boot, "cloned from the template tpl") {
			t.Fatalf("%s: %s %q", vm, st.State, st.Boot)
		}
		f := strings.Split(exec(vm, facts), "\n")
		if len(f) != 8 || f[7] != "warm" {
			t.Fatalf("%s's facts: %q", vm, f)
		}
		got := map[string]string{"hostname": f[0], "machine-id": f[1], "mac": f[2], "random": f[5]}
		if f[0] != vm || f[6] != "hostname="+vm {
			t.Errorf("%s's hostname is %q (%q)", vm, f[0], f[6])
		}
		if want := st.Spec.Net.MAC; f[2] != want {
			t.Errorf("%s's MAC is %s, want its own %s", vm, f[2], want)
		}
		for k, v := range got {
			for other, o := range seen {
				if o[k] == v {
					t.Errorf("%s and %s have the same %s %q", vm, other, k, v)
				}
			}
		}
		seen[vm] = got
		// One workload, started once in the template: the same pid and warm
		// file in every clone.
		if i > 0 {
			if prev := strings.Split(exec(names[0], "cat /root/workload.pid; md5sum /root/warm | cut -c1-32"), "\n"); f[3] != prev[0] || f[4] != prev[1] {
				t.Errorf("%s's workload is not the template's: pid %s warm %s, %s has %v", vm, f[3], f[4], names[0], prev)
			}
		}
	}

	// The clock: set from the identity disk as the clone resumed (the
	// template's stood still while it was saved).
	if skew := parseFloat(t, exec("c1", "date +%s")) - float64(time.Now().Unix()); skew < -2 || skew > 2 {
		t.Errorf("c1's clock is %.0f s off the host's", skew)
	}

	// Isolated: a clone reaches its gateway's DNS, never another clone.
	for _, vm := range names[1:] {
		addr := vms[vm].Spec.Net.Address.String()
		if out := exec("c1", "/run/microvm/init probe tcp peer="+addr+":22 | grep ^peer="); !strings.Contains(out, "blocked") {
			t.Errorf("c1 → %s (%s:22): %s", vm, addr, out)
		}
	}
	// A write to one clone's memory changes nothing in another.
	exec("c1", "echo c1 > /root/warm")
	if got := exec("c2", "md5sum /root/warm | cut -c1-32"); got != strings.Split(exec("c3", "md5sum /root/warm | cut -c1-32"), "\n")[0] || got == exec("c1", "md5sum /root/warm | cut -c1-32") {
		t.Errorf("c1's write reached c2 (c2's warm file %s)", got)
	}

	// Running clones leave the template's memory file as it was saved.
	if mem, err := savestate.Identify(filepath.Join(l.state, "vms", "tpl", "template", "memory")); err != nil || mem != rec.Memory {
		t.Errorf("the template's memory file changed under its clones: %+v, saved %+v (%v)", mem, rec.Memory, err)
	}

	// The template's spec changes: a new state for the next clone; the
	// running ones keep theirs.
	pid := vms["c1"].PID
	file = l.writeFile(strings.Replace(cloneTemplate, "ENV", ", env: { GENERATION: two }", 1))
	if out, err := l.cli("apply", "-f", file); err != nil {
		t.Fatalf("apply the changed template: %v\n%s", err, out)
	}
	if out, err := l.cli("clone", "tpl", "c6"); err != nil {
		t.Fatalf("clone c6 from the changed template: %v\n%s", err, out)
	}
	rec2 := record()
	if !rec2.SavedAt.After(rec.SavedAt) {
		t.Errorf("the template was not saved again after its spec changed (%v, %v)", rec.SavedAt, rec2.SavedAt)
	}
	if st := l.list()["c1"]; st.PID != pid || st.State != apitypes.Running {
		t.Errorf("c1 after the template changed: pid %d → %d, %s", pid, st.PID, st.State)
	}
	if got := exec("c6", "tr '\\0' '\\n' < /proc/$(cat /root/workload.pid)/environ | grep ^GENERATION="); got != "GENERATION=two" {
		t.Errorf("c6's workload environment: %q", got)
	}

	// A damaged state is made again by a cold boot, never handed over.
	state := filepath.Join(l.state, "vms", "tpl", "template", "state")
	fi, err := os.Stat(state)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(state, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	if out, err := l.cli("clone", "tpl", "c7"); err != nil {
		t.Fatalf("clone c7 from a damaged state: %v\n%s", err, out)
	}
	if !record().SavedAt.After(rec2.SavedAt) {
		t.Error("a damaged state was not made again")
	}
	if got := exec("c7", "cat /proc/sys/kernel/hostname"); got != "c7" {
		t.Errorf("c7 is %q", got)
	}

	// A state saved by another microvm-init (microvm updated since) is
	// made again: the old guest code would not know the new identity disk.
	rec3 := record()
	old := rec3
	old.Init = "initramfs-from-an-older-microvm.cpio"
	if b, err := json.Marshal(old); err != nil || os.WriteFile(filepath.Join(l.state, "vms", "tpl", "template", "template.json"), b, 0o600) != nil {
		t.Fatal("rewrite the template's record")
	}
	if out, err := l.cli("clone", "tpl", "c8"); err != nil {
		t.Fatalf("clone c8 from an older microvm-init's state: %v\n%s", err, out)
	}
	if rec4 := record(); !rec4.SavedAt.After(rec3.SavedAt) || rec4.Init != rec3.Init {
		t.Errorf("an older microvm-init's state was not made again: %+v", rec4)
	}
	if got := exec("c8", "cat /proc/sys/kernel/hostname"); got != "c8" {
		t.Errorf("c8 is %q", got)
	}

	// A pool of two: kept ready, one taken at once, another started in
	// its place; the taken one is the taker's.
	file = l.writeFile(strings.Replace(cloneTemplate, "ENV", ", env: { GENERATION: two }, pool: 2", 1))
	if out, err := l.cli("apply", "-f", file); err != nil {
		t.Fatalf("apply the pool: %v\n%s", err, out)
	}
	pool := func() []string {
		var ready []string
		for name, st := range l.list() {
			if strings.HasPrefix(name, "tpl-") && st.State == apitypes.Running {
				ready = append(ready, name)
			}
		}
		return ready
	}
	l.waitFor("the pool's two clones ready", 3*time.Minute, func(map[string]apitypes.VMStatus) bool { return len(pool()) == 2 })
	t0 = time.Now()
	out, err = l.cli("take", "tpl")
	taken := strings.TrimSpace(out)
	if err != nil || !strings.HasPrefix(taken, "tpl-") {
		t.Fatalf("take: %v\n%s", err, out)
	}
	t.Logf("took %s from the pool in %s", taken, time.Since(t0).Round(time.Millisecond))
	if got := exec(taken, "cat /proc/sys/kernel/hostname"); got != taken {
		t.Errorf("the taken clone is %q", got)
	}
	l.waitFor("the pool refilled", 3*time.Minute, func(map[string]apitypes.VMStatus) bool {
		n := 0
		for _, name := range pool() {
			if name != taken {
				n++
			}
		}
		return n == 2
	})
	if out, err := l.cli("rm", taken); err != nil {
		t.Errorf("rm %s: %v\n%s", taken, err, out)
	}
	// The template changes: its pool is made again of clones of the new
	// one, which take hands out.
	file = l.writeFile(strings.Replace(cloneTemplate, "ENV", ", env: { GENERATION: three }, pool: 2", 1))
	if out, err := l.cli("apply", "-f", file); err != nil {
		t.Fatalf("apply the changed template with its pool: %v\n%s", err, out)
	}
	l.waitFor("the pool made of the new template's clones", 3*time.Minute, func(map[string]apitypes.VMStatus) bool {
		ready := pool()
		if len(ready) != 2 {
			return false
		}
		for _, vm := range ready {
			if out, err := l.cli("exec", vm, "--", "sh", "-c", "tr '\\0' '\\n' < /proc/$(cat /root/workload.pid)/environ | grep ^GENERATION="); err != nil || strings.TrimSpace(out) != "GENERATION=three" {
				return false
			}
		}
		return true
	})
	// Lowering the pool removes its clones, and only them.
	file = l.writeFile(strings.Replace(cloneTemplate, "ENV", ", env: { GENERATION: two }", 1))
	if out, err := l.cli("apply", "-f", file); err != nil {
		t.Fatalf("apply without the pool: %v\n%s", err, out)
	}
	l.waitFor("the pool emptied", time.Minute, func(vms map[string]apitypes.VMStatus) bool {
		return len(pool()) == 0 && vms["c7"].State == apitypes.Running && vms["c8"].State == apitypes.Running
	})

	for _, vm := range append(names, "c6", "c7", "c8") {
		if out, err := l.cli("rm", vm); err != nil {
			t.Errorf("rm %s: %v\n%s", vm, err, out)
		}
	}
}

// TestClonesOfASystemdMachine: a Debian machine made from Debian's own
// packages, run by systemd (init: image) with nginx, is the template: it
// boots once to its normal target, nginx answering its health check, and
// is saved with its services frozen (the agent that saves it left
// running). Three clones come up as themselves (hostname, machine-id,
// address, SSH host key) with the template's systemd and nginx thawed,
// nginx answering on each clone's own address: m3, a clone in the file,
// with a secret of its own written as it resumed (its mode and owner as
// the file says, in no other clone), the template's secret in all.
func TestClonesOfASystemdMachine(t *testing.T) {
	requireGuestEnv(t)
	root := debianRoot(t, "systemd-sysv,dbus,nginx-light,procps")
	l := newDaemonLab(t, "cls")
	if _, err := store.Open(l.state).Import(context.Background(), "debian-systemd", root, store.Options{}); err != nil {
		t.Fatal(err)
	}
	id, keyFile := ageIdentity(t)
	seal := func(s string) string {
		armored, err := secrets.Encrypt([]byte(s+"\n"), id.Recipient())
		if err != nil {
			t.Fatal(err)
		}
		return testutil.Indent(armored, "          ")
	}
	tplSecret, jobSecret := "tpl-"+randomToken(t), "job-"+randomToken(t)
	file := l.writeFile(`vms:
  machine:
    index: 1
    memory: 768M
    image: debian-systemd
    init: image
    store: block
    template: true
    stopTimeout: 60s
    healthCheck: { http: 80 }
    secrets:
      - path: /etc/app/token
        age: |
` + seal(tplSecret) + `
  m3:
    index: 4
    from: machine
    secrets:
      - path: /run/secrets/job
        mode: "0440"
        owner: www-data
        age: |
` + seal(jobSecret) + `
`)
	l.startDaemon(file, "--age-identity", keyFile)
	out, err := l.cli("clone", "--timeout", "10m", "machine", "m1", "m2")
	if err != nil {
		t.Fatalf("clone: %v\n%s\ndaemon log:\n%s", err, out, tail(l.log(), 30))
	}
	t.Logf("clones of a systemd machine (the template made first):\n%s", out)
	l.waitFor("m3 running", 5*time.Minute, allRunning("m3"))
	seen := map[string]string{}
	for _, vm := range []string{"m1", "m2", "m3"} {
		out, err := l.cli("exec", vm, "--", "sh", "-c", "cat /proc/1/comm /proc/sys/kernel/hostname /etc/machine-id; systemctl is-active nginx; cat /etc/app/token; stat -c '%a:%U:%s' /run/secrets/job 2>/dev/null || echo none")
		if err != nil {
			t.Fatalf("exec in %s: %v\n%s", vm, err, out)
		}
		f := strings.Fields(out)
		if len(f) != 6 || f[0] != "systemd" || f[1] != vm || len(f[2]) != 32 || f[3] != "active" {
			t.Errorf("%s (init, hostname, machine-id, nginx, secrets): %q", vm, out)
			continue
		}
		if f[4] != tplSecret {
			t.Errorf("%s's template secret is %q", vm, f[4])
		}
		if want := map[bool]string{true: fmt.Sprintf("440:www-data:%d", len(jobSecret)+1), false: "none"}[vm == "m3"]; f[5] != want {
			t.Errorf("%s's /run/secrets/job (mode, owner, size): %s, want %s", vm, f[5], want)
		}
		if other, dup := seen[f[2]]; dup {
			t.Errorf("%s has %s's machine-id", vm, other)
		}
		seen[f[2]] = vm
		addr := l.list()[vm].Spec.Net.Address.String()
		if got := httpGet(t, l.ns, net.JoinHostPort(addr, "80")); !strings.Contains(got, "Welcome to nginx") {
			t.Errorf("nginx in %s answers %q", vm, got)
		}
	}
	if out, err := l.cli("exec", "m3", "--", "cat", "/run/secrets/job"); err != nil || strings.TrimSpace(out) != jobSecret {
		t.Errorf("m3's own secret: %q (%v)", out, err)
	}
	// Once m3 is up, no file the host keeps holds its secret (the identity
	// disk and initramfs that carried it are gone; memory files and
	// images, which cannot hold it, are skipped by size).
	filepath.WalkDir(l.state, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		if fi, err := d.Info(); err != nil || fi.Size() > 64<<20 {
			return nil
		}
		if b, err := os.ReadFile(path); err == nil && (bytes.Contains(b, []byte(jobSecret)) || bytes.Contains(b, []byte(base64.StdEncoding.EncodeToString([]byte(jobSecret+"\n"))))) {
			t.Errorf("m3's secret is in %s on the host", path)
		}
		return nil
	})
}
