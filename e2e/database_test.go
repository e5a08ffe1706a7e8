package e2e

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"microvm.dev/microvm/internal/store"
	"microvm.dev/microvm/internal/volume"
)

// TestDatabaseOnVolume runs Debian's PostgreSQL (the cluster its package
// made at install time) as a VM's workload, with its data directory on a
// new volume: the volume is first populated from the image (as Docker does
// for a new named volume), keeps the database's rows across a clean
// restart, and is not populated again; /var resets to the image's content
// at each boot while the dpkg database stays.
func TestDatabaseOnVolume(t *testing.T) {
	requireGuestEnv(t)
	root := debianRoot(t, "postgresql")
	ns, cfg := netLab(t, "pg", `vms:
  db:
    index: 1
    memory: 768M
    image: debian-postgres
    stopTimeout: 30s
    volumes: [{ name: pgdata, mountPoint: /var/lib/postgresql, size: 512M }]
`)
	env := newEnv(t, ns)
	pg := "/usr/lib/postgresql/15/bin/postgres"
	if _, err := store.Open(env.StateDir).Import(context.Background(), "debian-postgres", root, store.Options{Config: &store.Config{
		Entrypoint: []string{pg, "-D", "/var/lib/postgresql/15/main", "-c", "config_file=/etc/postgresql/15/main/postgresql.conf",
			"-c", "unix_socket_directories=/tmp", "-c", "external_pid_file=", "-c", "ssl=off"},
		User: "postgres", StopSignal: "SIGINT",
	}}); err != nil {
		t.Fatalf("import the mmdebstrap root: %v", err)
	}
	vm := cfg.VM("db")
	token := randomToken(t)

	p, r := boot(t, env, vm)
	if p.Volumes["pgdata"] != volume.Created {
		t.Fatalf("volume: %s, want created", p.Volumes["pgdata"])
	}
	c := sshTo(t, ns, p)
	query := func(sql string) string {
		t.Helper()
		var out string
		var err error
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
			out, err = runErr(c, "cd / && su -s /bin/sh postgres -c 'psql -h /tmp -XAtq' <<'EOF'\n"+sql+"\nEOF")
			if err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Fatalf("psql %s: %v\n%s", sql, err, out)
		}
		return out
	}
	query("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('" + token + "');")
	run(t, c, "echo gone > /var/log/postgresql/marker && test -s /var/lib/dpkg/status")
	console, _ := os.ReadFile(p.Launch.ConsoleLog)
	if !strings.Contains(string(console), "volume pgdata: new, populated with the image's /var/lib/postgresql") {
		t.Errorf("the new volume was not populated from the image:\n%s", tail(string(console), 20))
	}
	stop(t, r)
	if out := dumpe2fs(t, p.Launch.Disks[0].Path); !strings.Contains(out, "clean") {
		t.Errorf("the volume is not clean after the stop:\n%s", out)
	}

	p, r = boot(t, env, vm)
	if p.Volumes["pgdata"] == volume.Created {
		t.Fatal("the volume was made again")
	}
	c = sshTo(t, ns, p)
	if got := query("SELECT v FROM kept;"); got != token {
		t.Errorf("after a restart the table holds %q, want %q", got, token)
	}
	if out, err := runErr(c, "cat /var/log/postgresql/marker"); err == nil {
		t.Errorf("/var kept a file across the restart: %q", out)
	}
	if out := run(t, c, "dpkg-query -W -f '${Status}' postgresql-15"); out != "install ok installed" {
		t.Errorf("the image's dpkg database: %q", out)
	}
	console, _ = os.ReadFile(p.Launch.ConsoleLog)
	if strings.Contains(string(console), "populated with") {
		t.Error("a volume in use was populated again")
	}
	stop(t, r)
}
