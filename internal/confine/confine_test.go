package confine

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
)

func TestArgsParse(t *testing.T) {
	s := Spec{Root: "/run/x/root", ReadOnly: []string{"/k"}, Writable: []string{"/run/x", "/v.img"}, Devices: []string{"/dev/kvm"}}
	argv := []string{"setpriv", "--reuid=5", "--", "qemu", "-append", "--ro /x"}
	args := Args("/usr/bin/microvm", s, argv)
	if args[0] != "/usr/bin/microvm" || args[1] != Command {
		t.Fatalf("args = %q", args)
	}
	got, rest, err := Parse(args[2:])
	if err != nil || !reflect.DeepEqual(got, s) || !reflect.DeepEqual(rest, argv) {
		t.Errorf("Parse(Args) = %+v %q %v", got, rest, err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--root", "/r"}, "no -- before the command"},
		{[]string{"--root", "/r", "--"}, "no command after --"},
		{[]string{"--", "sh"}, "--root is required"},
		{[]string{"--root", "/r", "--rw", "rel", "--", "sh"}, "--rw rel: the path must be absolute"},
		{[]string{"--root", "/r", "--bind", "/x", "--", "sh"}, "unknown flag --bind"},
		{[]string{"--root"}, "--root needs a value"},
	} {
		if _, _, err := Parse(c.args); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) = %v, want %q", c.args, err, c.want)
		}
	}
}

// helperEnv carries the Spec to this test binary re-run as the confined
// process (TestMain).
const helperEnv = "CONFINE_TEST_SPEC"

// TestMain runs as the confined process when helperEnv is set: it enters
// the root and reports what it sees as JSON.
func TestMain(m *testing.M) {
	if js := os.Getenv(helperEnv); js != "" {
		var s Spec
		json.Unmarshal([]byte(js), &s)
		if err := Enter(s); err != nil {
			json.NewEncoder(os.Stdout).Encode(view{Err: err.Error()})
			os.Exit(0)
		}
		json.NewEncoder(os.Stdout).Encode(look(s))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// view is what the confined process saw.
type view struct {
	Err       string
	Pid       int
	Root      []string          // the entries of /
	Procs     []string          // the numeric entries of /proc
	Exists    map[string]bool   // by path
	Writes    map[string]string // path: "" or the error
	RootWrite string            // creating a file in /: the error
}

func look(s Spec) view {
	v := view{Pid: os.Getpid(), Exists: map[string]bool{}, Writes: map[string]string{}}
	entries, _ := os.ReadDir("/")
	for _, e := range entries {
		v.Root = append(v.Root, e.Name())
	}
	procs, _ := os.ReadDir("/proc")
	for _, e := range procs {
		if e.Name()[0] >= '0' && e.Name()[0] <= '9' {
			v.Procs = append(v.Procs, e.Name())
		}
	}
	for _, p := range append(append(s.ReadOnly, s.Writable...), os.Getenv("CONFINE_TEST_OTHER")) {
		_, err := os.Stat(p)
		v.Exists[p] = err == nil
		target := p
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			target = filepath.Join(p, "new")
		}
		f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err == nil {
			f.Close()
			v.Writes[p] = ""
		} else {
			v.Writes[p] = err.Error()
		}
	}
	if err := os.WriteFile("/x", nil, 0o600); err != nil {
		v.RootWrite = err.Error()
	}
	return v
}

// Enter, for real (root only): the confined process is process 1 and sees
// no other, its root holds the system read-only and exactly the paths it
// was given (writable ones writable, read-only ones not), not the file
// beside them, and the root itself is read-only.
func TestEnter(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mount and PID namespaces")
	}
	dir := t.TempDir()
	vm := filepath.Join(dir, "vms", "a")
	other := filepath.Join(dir, "vms", "b", "data.img")
	for _, p := range []string{filepath.Join(vm, "data.img"), filepath.Join(dir, "boot", "vmlinuz-1"), other} {
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte("x"), 0o600)
	}
	// The kernel is a link (as /boot/vmlinuz is): what it names is bound.
	os.Symlink("../../boot/vmlinuz-1", filepath.Join(vm, "kernel"))
	os.MkdirAll(filepath.Join(dir, "run", "a"), 0o755)
	s := Spec{Root: filepath.Join(dir, "run", "a", "root"), ReadOnly: []string{filepath.Join(vm, "kernel")},
		Writable: []string{filepath.Join(dir, "run", "a"), filepath.Join(vm, "data.img")}}
	js, _ := json.Marshal(s)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(js), "CONFINE_TEST_OTHER="+other)
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	SysProcAttr(cmd.SysProcAttr)
	out, err := cmd.Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		t.Fatalf("%v: %s", err, ee.Stderr)
	}
	var v view
	if err := json.Unmarshal(out, &v); err != nil || v.Err != "" {
		t.Fatalf("the confined process: %v %s %q", err, v.Err, out)
	}
	if v.Pid != 1 || !reflect.DeepEqual(v.Procs, []string{"1"}) {
		t.Errorf("pid %d, sees processes %v; want only itself as 1", v.Pid, v.Procs)
	}
	if !v.Exists[filepath.Join(vm, "data.img")] || !v.Exists[filepath.Join(vm, "kernel")] || v.Exists[other] {
		t.Errorf("exists: %v (want its two files, not the other VM's)", v.Exists)
	}
	if v.Writes[filepath.Join(vm, "data.img")] != "" || v.Writes[filepath.Join(dir, "run", "a")] != "" {
		t.Errorf("its writable paths: %v", v.Writes)
	}
	if !strings.Contains(v.Writes[filepath.Join(vm, "kernel")], "read-only file system") {
		t.Errorf("writing its read-only kernel: %q", v.Writes[filepath.Join(vm, "kernel")])
	}
	if !strings.Contains(v.RootWrite, "read-only file system") {
		t.Errorf("writing in its root: %q", v.RootWrite)
	}
	for _, want := range []string{"usr", "dev", "proc", "tmp"} {
		if !strings.Contains(" "+strings.Join(v.Root, " ")+" ", " "+want+" ") {
			t.Errorf("its root %v lacks %s", v.Root, want)
		}
	}
	for _, not := range []string{"home", "root", "var", "boot"} {
		if strings.Contains(" "+strings.Join(v.Root, " ")+" ", " "+not+" ") {
			t.Errorf("its root %v has %s", v.Root, not)
		}
	}
	// Nothing of it is left mounted on the host.
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), s.Root) {
		t.Errorf("the host has a mount on %s", s.Root)
	}
}
