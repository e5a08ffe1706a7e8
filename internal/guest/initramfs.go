package guest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"
	"github.com/ulikunitz/xz"

	"microvm.dev/microvm/internal/state"
)

// initramfsFormat changes when the base archive's layout changes, so old
// cache entries are not reused.
const initramfsFormat = "microvm-initramfs-1"

// Initramfs builds and caches the shared base archive.
type Initramfs struct {
	// Init is the microvm-init binary for the guest's architecture.
	Init string
	// CacheDir holds base archives by content hash.
	CacheDir string
}

// Base returns the base archive for kernel k, building it only when no
// archive with the same content hash is cached. cached says it was reused.
func (b *Initramfs) Base(k Kernel) (path string, cached bool, err error) {
	mods, err := ResolveModules(k.Modules)
	if err != nil {
		return "", false, err
	}
	key, err := b.key(mods)
	if err != nil {
		return "", false, err
	}
	path = filepath.Join(b.CacheDir, "initramfs-"+key+".cpio")
	if _, err := os.Stat(path); err == nil {
		return path, true, nil
	}
	var buf bytes.Buffer
	if err := b.write(&buf, mods); err != nil {
		return "", false, err
	}
	if err := state.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return "", false, fmt.Errorf("initramfs: %w", err)
	}
	return path, false, nil
}

// key digests everything the base archive is made of: the init binary's
// content and each module file's path, size and modification time.
func (b *Initramfs) key(mods *ModuleSet) (string, error) {
	h := sha256.New()
	io.WriteString(h, initramfsFormat+"\n")
	f, err := os.Open(b.Init)
	if err != nil {
		return "", fmt.Errorf("microvm-init: %w (build it: CGO_ENABLED=0 go build -o bin/microvm-init ./cmd/microvm-init)", err)
	}
	defer f.Close()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", b.Init, err)
	}
	for _, m := range mods.Files {
		fi, err := os.Stat(filepath.Join(mods.Dir, m))
		if err != nil {
			return "", fmt.Errorf("kernel module: %w", err)
		}
		fmt.Fprintf(h, "%s %d %d\n", m, fi.Size(), fi.ModTime().UnixNano())
	}
	return hex.EncodeToString(h.Sum(nil))[:32], nil
}

func (b *Initramfs) write(w io.Writer, mods *ModuleSet) error {
	rw := cpio.Newc.Writer(w)
	recs := []cpio.Record{
		cpio.Directory("dev", 0o755),
		// The kernel opens /dev/console for init's standard streams, and the
		// Go runtime needs /dev/null if they are missing.
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.CharDev("dev/null", 0o666, 1, 3),
		cpio.Directory("proc", 0o555),
		cpio.Directory("sys", 0o555),
		cpio.Directory("run", 0o755),
		cpio.Directory("tmp", 0o1777),
		cpio.Directory("newroot", 0o755),
		cpio.Directory("etc", 0o755),
		cpio.Directory("etc/microvm", 0o700),
		cpio.Directory("lib", 0o755),
		cpio.Directory("lib/microvm", 0o755),
		cpio.Directory("lib/microvm/modules", 0o755),
	}
	initBin, err := os.ReadFile(b.Init)
	if err != nil {
		return fmt.Errorf("read microvm-init: %w", err)
	}
	recs = append(recs, cpio.StaticRecord(initBin, cpio.Info{Name: "init", Mode: cpio.S_IFREG | 0o755}))
	var order []string
	for _, m := range mods.Files {
		data, err := readModule(filepath.Join(mods.Dir, m))
		if err != nil {
			return err
		}
		name := "lib/microvm/modules/" + normName(m) + ".ko"
		recs = append(recs, cpio.StaticRecord(data, cpio.Info{Name: name, Mode: cpio.S_IFREG | 0o644}))
		order = append(order, "/"+name)
	}
	recs = append(recs, cpio.StaticFile(ModulesOrderPath, strings.Join(order, "\n")+"\n", 0o644))
	if err := cpio.WriteRecords(rw, recs); err != nil {
		return fmt.Errorf("write initramfs: %w", err)
	}
	return cpio.WriteTrailer(rw)
}

// readModule reads a module file, decompressing .ko.xz and .ko.zst so the
// guest kernel needs no in-kernel decompression.
func readModule(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("kernel module: %w", err)
	}
	defer f.Close()
	var r io.Reader = f
	switch {
	case strings.HasSuffix(path, ".xz"):
		xr, err := xz.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("decompress %s: %w", path, err)
		}
		r = xr
	case strings.HasSuffix(path, ".zst"):
		zr, err := zstd.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("decompress %s: %w", path, err)
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(path, ".gz"):
		return nil, fmt.Errorf("kernel module %s: gzip-compressed modules are not supported", path)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return data, nil
}

// WriteVM writes a VM's initramfs to dst (mode 0600, it holds the VM's SSH
// host key): the base archive followed by a second archive with the spec.
func WriteVM(base, dst string, spec *Spec) error {
	baseData, err := os.ReadFile(base)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	js, err := json.Marshal(spec)
	if err != nil {
		return fmt.Errorf("initramfs: encode spec: %w", err)
	}
	var buf bytes.Buffer
	buf.Write(baseData)
	rw := cpio.Newc.Writer(&buf)
	if err := cpio.WriteRecords(rw, []cpio.Record{cpio.StaticRecord(js, cpio.Info{Name: SpecPath, Mode: cpio.S_IFREG | 0o600})}); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if err := cpio.WriteTrailer(rw); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return state.WriteFile(dst, buf.Bytes(), 0o600)
}
