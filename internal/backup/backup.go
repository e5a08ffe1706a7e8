// Package backup sends volume snapshots off the host to a restic
// repository and brings them back: each snapshot is one restic snapshot
// of one file (the volume's image, read from the snapshot copy, never from
// the live volume), tagged with the VM, the volume and the snapshot's
// name, so any host holding the repository's password can list and
// restore it. restic (Debian's package) does the encryption,
// deduplication, transport (a local path, SFTP, S3-compatible or REST
// server) and retention; this package only runs it.
package backup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"time"

	"microvm.dev/microvm/internal/apitypes"
)

// Backup is one volume snapshot in the repository.
type Backup = apitypes.Backup

// tagPrefix marks the restic snapshots microvm made.
const tagPrefix = "microvm"

// Repo is a restic repository as microvm uses it.
type Repo struct {
	// Repository is restic's repository (-r): a path, sftp:…, s3:…, rest:….
	Repository string
	// Password is the repository's password, in the clear (decrypted from
	// the file's age ciphertext just before use).
	Password string
	// Env is more environment for restic (S3 credentials and the like).
	Env map[string]string
	// CacheDir is restic's cache ("" = none).
	CacheDir string
	// Host is the host name recorded with each backup.
	Host string
	// Bin is the restic binary ("" = restic from PATH).
	Bin string
}

// ErrNoRestic says restic is not installed.
var ErrNoRestic = errors.New("restic is not installed (apt install restic)")

// run runs restic with args, stdin and stdout; the error carries restic's
// own last words.
func (r Repo) run(ctx context.Context, stdin io.Reader, stdout io.Writer, args ...string) error {
	bin := r.Bin
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("restic"); err != nil {
			return ErrNoRestic
		}
	}
	full := []string{"--repo", r.Repository, "--quiet"}
	if r.CacheDir != "" {
		full = append(full, "--cache-dir", r.CacheDir)
	} else {
		full = append(full, "--no-cache")
	}
	cmd := exec.CommandContext(ctx, bin, append(full, args...)...)
	cmd.Env = append(os.Environ(), "RESTIC_PASSWORD="+r.Password, "RESTIC_REPOSITORY=", "RESTIC_PASSWORD_FILE=", "RESTIC_PASSWORD_COMMAND=")
	for k, v := range r.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, &stderr
	if err := cmd.Run(); err != nil {
		return &resticError{cmd: args[0], stderr: stderr.String(), err: err}
	}
	return nil
}

// resticError is a failed restic run: restic's own reason.
type resticError struct {
	cmd, stderr string
	err         error
}

func (e *resticError) Error() string {
	for _, l := range strings.Split(e.stderr, "\n") {
		if msg, ok := strings.CutPrefix(strings.TrimSpace(l), "Fatal: "); ok {
			return "restic " + e.cmd + ": " + msg
		}
	}
	if s := strings.TrimSpace(e.stderr); s != "" {
		lines := strings.Split(s, "\n")
		return "restic " + e.cmd + ": " + lines[len(lines)-1]
	}
	return "restic " + e.cmd + ": " + e.err.Error()
}

func (e *resticError) Unwrap() error { return e.err }

// Ensure opens the repository, making it first when there is none yet:
// a repository that exists and refuses the password is an error saying
// so.
func (r Repo) Ensure(ctx context.Context) error {
	err := r.run(ctx, nil, io.Discard, "cat", "config")
	if err == nil {
		return nil
	}
	re, ok := errors.AsType[*resticError](err)
	if !ok || !strings.Contains(re.stderr, "Is there a repository at the following location?") {
		return fmt.Errorf("repository %s: %w", r.Repository, err)
	}
	if err := r.run(ctx, nil, io.Discard, "init"); err != nil {
		return fmt.Errorf("repository %s: %w", r.Repository, err)
	}
	return nil
}

// Send backs up the snapshot image at src of vm's volume: its bytes, read
// from the snapshot copy, stored as <volume>.img in a restic snapshot
// tagged with the VM, the volume and the snapshot's name.
func (r Repo) Send(ctx context.Context, vm string, snap apitypes.Snapshot, src string) (Backup, error) {
	if err := r.Ensure(ctx); err != nil {
		return Backup{}, err
	}
	f, err := os.Open(src)
	if err != nil {
		return Backup{}, err
	}
	defer f.Close()
	var out bytes.Buffer
	err = r.run(ctx, f, &out, "backup", "--json", "--stdin", "--stdin-filename", snap.Volume+".img",
		"--host", r.Host, "--time", snap.Time.Local().Format("2006-01-02 15:04:05"),
		"--tag", tagPrefix, "--tag", "vm="+vm, "--tag", "volume="+snap.Volume, "--tag", "snapshot="+snap.Name)
	if err != nil {
		return Backup{}, fmt.Errorf("back up %s to %s: %w", snap.Name, r.Repository, err)
	}
	var summary struct {
		MessageType string `json:"message_type"`
		SnapshotID  string `json:"snapshot_id"`
	}
	for _, line := range strings.Split(out.String(), "\n") {
		if json.Unmarshal([]byte(line), &summary) == nil && summary.MessageType == "summary" {
			break
		}
	}
	if summary.SnapshotID == "" {
		return Backup{}, fmt.Errorf("back up %s to %s: restic reported no snapshot", snap.Name, r.Repository)
	}
	return Backup{ID: summary.SnapshotID, VM: vm, Volume: snap.Volume, Snapshot: snap.Name, Time: snap.Time, Size: snap.Size, Host: r.Host}, nil
}

// List returns vm's backups in the repository, oldest first.
func (r Repo) List(ctx context.Context, vm string) ([]Backup, error) {
	var out bytes.Buffer
	if err := r.run(ctx, nil, &out, "snapshots", "--json", "--tag", tagPrefix+",vm="+vm); err != nil {
		return nil, fmt.Errorf("list the backups of %s in %s: %w", vm, r.Repository, err)
	}
	var snaps []struct {
		ID       string    `json:"short_id"` // what backup reports
		Time     time.Time `json:"time"`
		Hostname string    `json:"hostname"`
		Tags     []string  `json:"tags"`
	}
	if err := json.Unmarshal(out.Bytes(), &snaps); err != nil {
		return nil, fmt.Errorf("restic snapshots: %w", err)
	}
	var list []Backup
	for _, s := range snaps {
		b := Backup{ID: s.ID, VM: vm, Time: s.Time.UTC(), Host: s.Hostname}
		for _, t := range s.Tags {
			k, v, _ := strings.Cut(t, "=")
			switch k {
			case "volume":
				b.Volume = v
			case "snapshot":
				b.Snapshot = v
			}
		}
		if b.Volume != "" && b.Snapshot != "" {
			list = append(list, b)
		}
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Time.Before(list[j].Time) })
	return list, nil
}

// Find is vm's backup of the snapshot named name.
func (r Repo) Find(ctx context.Context, vm, name string) (Backup, error) {
	list, err := r.List(ctx, vm)
	if err != nil {
		return Backup{}, err
	}
	for i := len(list) - 1; i >= 0; i-- {
		if list[i].Snapshot == name {
			return list[i], nil
		}
	}
	return Backup{}, fmt.Errorf("%s has no backup of snapshot %s in %s (microvm volume backups %s)", vm, name, r.Repository, vm)
}

// Fetch writes backup b's image to dst, sparse (runs of zeros become
// holes). restic checks every block's hash as it reads it.
func (r Repo) Fetch(ctx context.Context, b Backup, dst string) error {
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	w := &sparseWriter{f: f}
	err = r.run(ctx, nil, w, "dump", b.ID, "/"+b.Volume+".img")
	if err == nil {
		err = w.finish()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
		return fmt.Errorf("restore %s (%s) from %s: %w", b.Snapshot, b.ID, r.Repository, err)
	}
	return nil
}

// Prune forgets vm's backups of volume beyond the newest keep, and
// removes the data no backup uses any more.
func (r Repo) Prune(ctx context.Context, vm, volume string, keep int) error {
	if keep <= 0 {
		return nil
	}
	err := r.run(ctx, nil, io.Discard, "forget", "--tag", tagPrefix+",vm="+vm+",volume="+volume,
		"--group-by", "paths", "--keep-last", fmt.Sprint(keep), "--prune")
	if err != nil {
		return fmt.Errorf("prune the backups of %s's %s in %s: %w", vm, volume, r.Repository, err)
	}
	return nil
}
