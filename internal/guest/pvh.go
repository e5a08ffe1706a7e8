package guest

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/klauspost/compress/zstd"
)

// xenPVHNote is the ELF note type of the PVH entry point
// (XEN_ELFNOTE_PHYS32_ENTRY), in notes named "Xen".
const xenPVHNote = 18

// PVHKernel returns an ELF vmlinux with a PVH entry point for the x86
// kernel at image, for hypervisors to boot directly (no firmware, no
// decompression in the guest): image itself when it is one, else the
// vmlinux extracted from the bzImage once and cached in cacheDir/pvh by
// the bzImage's content hash. It returns "" when the kernel has no PVH
// entry (the bzImage is then booted as it is).
//
// It runs on every launch: a memo keyed by the file's identity (device,
// inode, size, time) leads to the content hash, so the bzImage is read
// and hashed only the first time it is seen.
func PVHKernel(image, cacheDir string) (string, error) {
	f, err := os.Open(image)
	if err != nil {
		return "", err
	}
	defer f.Close()
	magic := make([]byte, 4)
	if _, err := io.ReadFull(f, magic); err != nil {
		return "", fmt.Errorf("kernel %s: %w", image, err)
	}
	if bytes.Equal(magic, []byte(elf.ELFMAG)) {
		if hasPVHNote(f) {
			return image, nil
		}
		return "", nil
	}
	dir := filepath.Join(cacheDir, "pvh")
	memo, err := identityKey(f, image)
	if err != nil {
		return "", err
	}
	memo = filepath.Join(dir, "file-"+memo)
	key := ""
	if b, err := os.ReadFile(memo); err == nil {
		key = string(b)
	} else {
		b, err := os.ReadFile(image)
		if err != nil {
			return "", err
		}
		sum := sha256.Sum256(b)
		key = hex.EncodeToString(sum[:])[:24]
		if err := extractOnce(b, filepath.Join(dir, key), image); err != nil {
			return "", err
		}
		if err := os.WriteFile(memo, []byte(key), 0o644); err != nil {
			return "", err
		}
	}
	if _, err := os.Stat(filepath.Join(dir, key+".vmlinux")); err == nil {
		return filepath.Join(dir, key+".vmlinux"), nil
	}
	return "", nil // key.none: no PVH entry
}

// identityKey names the file f (at path) by what changes when it does.
func identityKey(f *os.File, path string) (string, error) {
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	st := fi.Sys().(*syscall.Stat_t)
	sum := sha256.Sum256(fmt.Appendf(nil, "%s\x00%d\x00%d\x00%d\x00%d", path, st.Dev, st.Ino, fi.Size(), fi.ModTime().UnixNano()))
	return hex.EncodeToString(sum[:])[:24], nil
}

// extractOnce makes base.vmlinux from the bzImage b, or base.none when it
// has no PVH entry, unless one of them is there already.
func extractOnce(b []byte, base, image string) error {
	out, none := base+".vmlinux", base+".none"
	for _, p := range []string{out, none} {
		if _, err := os.Stat(p); err == nil {
			return nil
		}
	}
	if err := os.MkdirAll(filepath.Dir(base), 0o755); err != nil {
		return err
	}
	vmlinux, err := extractVmlinux(b)
	if err == nil && !hasPVHNote(bytes.NewReader(vmlinux)) {
		err = errNoPVH
	}
	if errors.Is(err, errNoPVH) {
		return os.WriteFile(none, nil, 0o644) // remembered: the bzImage it is
	}
	if err != nil {
		return fmt.Errorf("extract the vmlinux of %s: %w", image, err)
	}
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, vmlinux, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}

var errNoPVH = errors.New("no PVH entry point")

// extractVmlinux decompresses the kernel a bzImage carries (the setup
// header's payload), as the kernel's scripts/extract-vmlinux does.
func extractVmlinux(b []byte) ([]byte, error) {
	if len(b) < 0x250 || string(b[0x202:0x206]) != "HdrS" {
		return nil, errNoPVH // not an x86 bzImage
	}
	setup := int(b[0x1f1])
	if setup == 0 {
		setup = 4
	}
	off := (setup+1)*512 + int(binary.LittleEndian.Uint32(b[0x248:]))
	n := int(binary.LittleEndian.Uint32(b[0x24c:]))
	if off < 0 || n <= 4 || off+n > len(b) {
		return nil, fmt.Errorf("payload %d+%d outside the %d-byte image", off, n, len(b))
	}
	payload := b[off : off+n]
	// Every format but gzip has the decompressed size appended (4 bytes).
	trimmed := payload[:len(payload)-4]
	switch {
	case bytes.HasPrefix(payload, []byte{0x1f, 0x8b}):
		r, err := gzip.NewReader(bytes.NewReader(payload))
		if err != nil {
			return nil, err
		}
		r.Multistream(false)
		return io.ReadAll(r)
	case bytes.HasPrefix(payload, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		d, err := zstd.NewReader(bytes.NewReader(trimmed))
		if err != nil {
			return nil, err
		}
		defer d.Close()
		return io.ReadAll(d)
	case bytes.HasPrefix(payload, []byte("BZh")):
		return io.ReadAll(bzip2.NewReader(bytes.NewReader(trimmed)))
	case bytes.HasPrefix(payload, []byte("\xfd7zXZ\x00")):
		// The kernel's xz carries the x86 BCJ filter, which only xz-utils
		// decodes.
		return decompressWith(trimmed, "xz", "-dc")
	case bytes.HasPrefix(payload, []byte{0x5d, 0x00, 0x00}):
		return decompressWith(trimmed, "xz", "--format=lzma", "-dc")
	case bytes.HasPrefix(payload, []byte{0x02, 0x21, 0x4c, 0x18}):
		return decompressWith(trimmed, "lz4", "-dc")
	case bytes.HasPrefix(payload, []byte("\x89LZO")):
		return decompressWith(trimmed, "lzop", "-dc")
	}
	return nil, fmt.Errorf("unknown compression of the kernel payload (% x)", payload[:4])
}

// decompressWith runs a decompressor on data.
func decompressWith(data []byte, argv ...string) ([]byte, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = bytes.NewReader(data)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s: %w: %s", argv[0], err, bytes.TrimSpace(errOut.Bytes()))
	}
	return out.Bytes(), nil
}

// hasPVHNote says whether the ELF file r has the PVH entry note.
func hasPVHNote(r io.ReaderAt) bool {
	f, err := elf.NewFile(r)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		b, err := io.ReadAll(p.Open())
		if err != nil {
			continue
		}
		for len(b) >= 12 {
			namesz := int(f.ByteOrder.Uint32(b[0:]))
			descsz := int(f.ByteOrder.Uint32(b[4:]))
			typ := f.ByteOrder.Uint32(b[8:])
			name := 12 + (namesz+3)&^3
			next := name + (descsz+3)&^3
			if next > len(b) || namesz > len(b) {
				break
			}
			if typ == xenPVHNote && bytes.Equal(bytes.TrimRight(b[12:12+namesz], "\x00"), []byte("Xen")) {
				return true
			}
			b = b[next:]
		}
	}
	return false
}
