package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/testutil"
)

// TestApplicationImagesFromRegistry runs images nobody here wrote, as
// Docker would: Debian's nginx package in an image configured as the
// official nginx image is (entrypoint nginx, cmd -g 'daemon off;', stop
// signal SIGQUIT, Debian's own configuration), and a second image of the
// same root whose config names a user with a group, an environment and a
// shell entrypoint. Both are pushed to Debian's docker-registry on
// loopback and pulled by the daemon. nginx serves its port from the image's
// own /var (the dpkg database is there too); the second workload runs as
// its user with Docker's open files limit and a container's mounts and
// files; workloads that exit end their VM, with the exit status in status
// and the restart policy acting on it.
func TestApplicationImagesFromRegistry(t *testing.T) {
	requireGuestEnv(t)
	root := debianRoot(t, "nginx-light,procps")
	reg := startRegistry(t)
	base := fileLayer(t, root)
	nginx := reg.push(t, "debian/nginx:1", v1.Config{
		Entrypoint: []string{"nginx"}, Cmd: []string{"-g", "daemon off;"}, StopSignal: "SIGQUIT",
		Env:          []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "NGINX_FLAVOUR=debian"},
		ExposedPorts: map[string]struct{}{"80/tcp": {}},
	}, base)
	tools := reg.push(t, "debian/tools:1", v1.Config{
		Entrypoint: []string{"/bin/sh", "-c"},
		Cmd:        []string{"id > /tmp/id; ulimit -n > /tmp/nofile; exec sleep infinity"},
		User:       "www-data:adm", Env: []string{"GREETING=from-the-image-config"},
	}, base, filesLayer(t, map[string]string{"etc/motd": "tools image\n"}))

	l := newDaemonLab(t, "app")
	file := filepath.Join(l.state, "infra.yaml")
	fleet := fmt.Sprintf(`defaults: { memory: 512M, stopTimeout: 30s }
vms:
  web: { index: 1, image: %q, ports: [80] }
  tools: { index: 2, image: %q }
`, nginx, tools)
	os.WriteFile(file, []byte(fleet), 0o644)
	l.startDaemon(file)
	l.waitFor("web and tools running", 5*time.Minute, func(v map[string]apitypes.VMStatus) bool {
		for _, n := range []string{"web", "tools"} {
			if v[n].State == apitypes.Failed {
				t.Fatalf("%s failed: %s", n, v[n].Failure)
			}
		}
		return allRunning("web", "tools")(v)
	})

	got := httpGet(t, l.ns, net.JoinHostPort("10.1.0.2", "80"))
	if !strings.Contains(got, "Welcome to nginx") {
		t.Errorf("GET / on web = %q, want Debian's nginx page", got)
	}
	exec := func(vm string, script string) string {
		t.Helper()
		out, err := l.cli("exec", vm, "--", "sh", "-c", script)
		if err != nil {
			t.Fatalf("%s: %s: %v\n%s", vm, script, err, out)
		}
		return strings.TrimSpace(out)
	}
	if out := exec("web", "dpkg-query -W -f '${Status}' nginx-light; ls -d /var/lib/nginx/body"); !strings.Contains(out, "install ok installed") || !strings.Contains(out, "/var/lib/nginx/body") {
		t.Errorf("web: the image's /var is not there: %q", out)
	}
	// (nginx overwrites its environment with its process title, so the
	// image's environment is checked on the tools VM's workload.)
	if out := exec("web", "ps -o user= -C nginx | sort | uniq -c"); !strings.Contains(out, "root") || !strings.Contains(out, "www-data") {
		t.Errorf("web: want nginx's master as root and its workers as www-data, as its own configuration says:\n%s", out)
	}
	if out := exec("tools", "cat /tmp/id /tmp/nofile"); out != "uid=33(www-data) gid=4(adm) groups=4(adm)\n1048576" {
		t.Errorf("tools: the workload ran as %q, want www-data:adm with nofile 1048576", out)
	}
	if out := exec("tools", "tr '\\0' '\\n' < /proc/$(pgrep -x sleep)/environ; cat /etc/hosts /etc/hostname; awk '{print $2, $3}' /proc/mounts"); !strings.Contains(out, "GREETING=from-the-image-config") ||
		!strings.Contains(out, "10.2.0.2\ttools") || !strings.Contains(out, "/sys/fs/cgroup cgroup2") || !strings.Contains(out, "/dev/mqueue mqueue") || !strings.Contains(out, "/dev/shm tmpfs") {
		t.Errorf("tools: the container's environment, files or mounts are missing:\n%s", out)
	}

	// A stop sends nginx its stop signal first; it quits gracefully (0).
	if out, err := l.cli("stop", "web"); err != nil {
		t.Fatalf("stop web: %v\n%s", err, out)
	}
	console, _ := os.ReadFile(filepath.Join(l.state, "vms", "web", "console.log"))
	if !strings.Contains(string(console), "stopping the workload with SIGQUIT") || !strings.Contains(string(console), "microvm-exit vm=web code=0") {
		t.Errorf("web's console does not show the graceful stop:\n%s", tail(string(console), 15))
	}
	if st := l.list()["web"]; st.State != apitypes.Stopped || st.ExitCode == nil || *st.ExitCode != 0 {
		t.Errorf("web after stop: %+v", st)
	}

	// Workloads that exit: the VM powers off with their status, and
	// on-failure restarts exactly the one that failed.
	os.WriteFile(file, []byte(fleet+fmt.Sprintf(`  done: { index: 3, image: %q, restart: on-failure, command: ["sh", "-c", "sleep 1; exit 0"] }
  fails: { index: 4, image: %q, restart: on-failure, command: ["sh", "-c", "sleep 1; exit 3"] }
`, tools, tools)), 0o644)
	if out, err := l.cli("apply", "-f", file); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	vms := l.waitFor("done stopped, fails restarted", 3*time.Minute, func(v map[string]apitypes.VMStatus) bool {
		return v["done"].State == apitypes.Stopped && v["fails"].Restarts >= 1
	})
	if st := vms["done"]; st.ExitCode == nil || *st.ExitCode != 0 || st.Restarts != 0 {
		t.Errorf("done: %+v, want stopped with exit 0 and no restart", st)
	}
	if st := vms["fails"]; st.ExitCode == nil || *st.ExitCode != 3 || !strings.Contains(st.LastExit, "status 3") {
		t.Errorf("fails: %+v, want exit 3", st)
	}
	if out, _ := l.cli("status", "fails"); !regexp.MustCompile(`(?m)^exit code: +3$`).MatchString(out) {
		t.Errorf("status fails does not show the exit code:\n%s", out)
	}
	if out, _ := l.cli("list"); !strings.Contains(out, "EXIT") {
		t.Errorf("list has no exit column:\n%s", out)
	}
}

// TestImageProblemsRefused: an entrypoint missing from the image and a user
// not in its /etc/passwd are refused by validate and apply, naming the VM,
// the image and the cause, with nothing started.
func TestImageProblemsRefused(t *testing.T) {
	requireGuestEnv(t)
	root := debianRoot(t, "nginx-light,procps")
	l := newDaemonLab(t, "bad")
	if out, err := l.cli("image", "import", "debian-nginx", root, "--entrypoint", "nginx,-g,daemon off;"); err != nil {
		t.Fatalf("import the mmdebstrap root: %v\n%s", err, out)
	}
	if out, err := l.cli("image", "inspect", "debian-nginx"); err != nil || !strings.Contains(out, "entrypoint:") || !strings.Contains(out, "'daemon off;'") {
		t.Errorf("image inspect: %v\n%s", err, out)
	}
	file := filepath.Join(l.state, "infra.yaml")
	os.WriteFile(file, []byte(`vms:
  a: { index: 1, image: debian-nginx, command: ["/usr/sbin/apache2", "-DFOREGROUND"] }
  b: { index: 2, image: debian-nginx, user: postgres }
  c: { index: 3, image: debian-nginx, init: image }
`), 0o644)
	out, err := l.cli("validate", "-f", file)
	for _, want := range []string{
		`vms.a.command: image "debian-nginx" cannot run "/usr/sbin/apache2"`,
		`vms.b.user: image "debian-nginx": user "postgres" is not in its /etc/passwd`,
		`vms.c.init: init: image, but image "debian-nginx" has no init`,
	} {
		if err == nil || !strings.Contains(out, want) {
			t.Errorf("validate: %v, want %q in:\n%s", err, want, out)
		}
	}
	l.startDaemon("")
	if out, err := l.cli("apply", "-f", file); err == nil || !strings.Contains(out, "nothing was changed") {
		t.Errorf("apply of images that cannot run: %v\n%s", err, out)
	}
	if vms := l.list(); len(vms) != 0 {
		t.Errorf("VMs after a refused apply: %+v", vms)
	}
	testutil.Report(t, testutil.FaultResult{Fault: "images that cannot run what the VM asks (a missing command, an unknown user, init: image without an init)", Trials: 3,
		Result: "refused by validate and apply, naming the VM, the image and the cause; nothing started"})
}

func tail(s string, n int) string { return testutil.Tail(s, n) }
