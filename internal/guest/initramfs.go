package guest

import (
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
	"golang.org/x/sys/unix"

	"microvm.dev/microvm/internal/state"
)

// initramfsFormat changes when the base archive's layout changes, so old
// cache entries are not reused.
const initramfsFormat = "microvm-initramfs-2" // 2: with modules.deps

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
	// One builder at a time (across processes too): VMs started together
	// wait for the first build and then reuse it.
	unlock, err := lockDir(b.CacheDir)
	if err != nil {
		return "", false, err
	}
	defer unlock()
	if _, err := os.Stat(path); err == nil {
		return path, true, nil
	}
	if err := state.WriteFileFunc(path, 0o644, func(w io.Writer) error { return b.write(w, mods) }); err != nil {
		return "", false, fmt.Errorf("initramfs: %w", err)
	}
	return path, false, nil
}

// lockDir takes an exclusive lock on dir/.lock until the returned func is called.
func lockDir(dir string) (func(), error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("initramfs cache: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("initramfs cache: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("initramfs cache lock: %w", err)
	}
	return func() { unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
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

// write streams the base archive: one record at a time, so memory holds at
// most one module, never the whole archive.
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
	if err := cpio.WriteRecords(rw, recs); err != nil {
		return fmt.Errorf("write initramfs: %w", err)
	}
	initFile, err := os.Open(b.Init)
	if err != nil {
		return fmt.Errorf("read microvm-init: %w", err)
	}
	defer initFile.Close()
	fi, err := initFile.Stat()
	if err != nil {
		return err
	}
	if err := rw.WriteRecord(cpio.Record{ReaderAt: initFile, Info: cpio.Info{Name: "init", Mode: cpio.S_IFREG | 0o755, FileSize: uint64(fi.Size())}}); err != nil {
		return fmt.Errorf("write initramfs: %w", err)
	}
	var order, deps []string
	for _, m := range mods.Files {
		data, err := ReadModule(filepath.Join(mods.Dir, m))
		if err != nil {
			return err
		}
		name := "lib/microvm/modules/" + normName(m) + ".ko"
		if err := rw.WriteRecord(cpio.StaticRecord(data, cpio.Info{Name: name, Mode: cpio.S_IFREG | 0o644})); err != nil {
			return fmt.Errorf("write initramfs: %w", err)
		}
		order = append(order, "/"+name)
		deps = append(deps, ModuleLine("/"+name, mods.Deps[m]))
	}
	if err := rw.WriteRecord(cpio.StaticFile(ModulesOrderPath, strings.Join(order, "\n")+"\n", 0o644)); err != nil {
		return fmt.Errorf("write initramfs: %w", err)
	}
	if err := rw.WriteRecord(cpio.StaticFile(ModulesDepsPath, strings.Join(deps, "\n")+"\n", 0o644)); err != nil {
		return fmt.Errorf("write initramfs: %w", err)
	}
	return cpio.WriteTrailer(rw)
}

// ReadModule reads a module file, decompressing .ko.xz and .ko.zst (the
// host builds the initramfs with it so the guest kernel needs no in-kernel
// decompression; microvm-init loads compressed modules with it).
func ReadModule(path string) ([]byte, error) {
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
	js, err := json.Marshal(spec)
	if err != nil {
		return fmt.Errorf("initramfs: encode spec: %w", err)
	}
	// The guest refuses a spec that does not check; so does the host, first.
	if _, err := ParseSpec(js); err != nil {
		return fmt.Errorf("initramfs: the spec of %s: %w", spec.Name, err)
	}
	// Streamed: the base archive is copied, not loaded, so starting many VMs
	// at once does not hold many copies of it in memory.
	return state.WriteFileFunc(dst, 0o600, func(w io.Writer) error {
		f, err := os.Open(base)
		if err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
		defer f.Close()
		if _, err := io.Copy(w, f); err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
		rw := cpio.Newc.Writer(w)
		if err := cpio.WriteRecords(rw, []cpio.Record{cpio.StaticRecord(js, cpio.Info{Name: SpecPath, Mode: cpio.S_IFREG | 0o600})}); err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
		return cpio.WriteTrailer(rw)
	})
}
