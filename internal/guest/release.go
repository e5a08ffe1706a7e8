package guest

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// KernelRelease is the release of the kernel image at path (what uname -r
// says in its guest), read from an x86 bzImage's setup header, else from
// the "Linux version" banner of an ELF vmlinux, a raw Image or a
// gzip-compressed one (arm64's vmlinuz). It returns "" when the image
// carries neither (another compression): the release is then not known.
func KernelRelease(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("kernel %s: %w", path, err)
	}
	defer f.Close()
	head := make([]byte, 0x10000)
	n, err := io.ReadFull(f, head)
	if err != nil && err != io.ErrUnexpectedEOF {
		return "", fmt.Errorf("kernel %s: %w", path, err)
	}
	head = head[:n]
	if n > 0x210 && string(head[0x202:0x206]) == "HdrS" {
		// boot protocol: kernel_version at 0x20e, an offset from 0x200.
		if off := int(binary.LittleEndian.Uint16(head[0x20e:])) + 0x200; off > 0x200 && off < n {
			if rel, _, ok := bytes.Cut(head[off:], []byte(" ")); ok && len(rel) > 0 {
				return string(rel), nil
			}
		}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	var r io.Reader = f
	if n >= 2 && head[0] == 0x1f && head[1] == 0x8b {
		zr, err := gzip.NewReader(f)
		if err != nil {
			return "", fmt.Errorf("kernel %s: %w", path, err)
		}
		r = zr
	}
	return scanBanner(r)
}

// scanBanner finds "Linux version RELEASE " in r's bytes.
func scanBanner(r io.Reader) (string, error) {
	marker := []byte("Linux version ")
	buf := make([]byte, 0, 1<<20)
	chunk := make([]byte, 1<<20)
	for {
		n, err := r.Read(chunk)
		buf = append(buf, chunk[:n]...)
		for {
			i := bytes.Index(buf, marker)
			if i < 0 {
				break
			}
			rest := buf[i+len(marker):]
			if j := bytes.IndexByte(rest, ' '); j > 0 {
				// The banner's release is followed by " (builder@host)".
				if rel := string(rest[:j]); j < 65 && !strings.ContainsAny(rel, "%\x00\n") {
					return rel, nil
				}
				buf = rest
				continue
			}
			break // the release runs on into the next chunk
		}
		if err == io.EOF {
			return "", nil
		}
		if err != nil {
			return "", err
		}
		if len(buf) > 128 {
			buf = append(buf[:0], buf[len(buf)-128:]...)
		}
	}
}

// ModulesRelease is the kernel release the modules in dir were built for:
// the vermagic of the first module in modules.order (or modules.dep).
func ModulesRelease(dir string) (string, error) {
	var first string
	for _, list := range []string{"modules.order", "modules.dep"} {
		b, err := os.ReadFile(filepath.Join(dir, list))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if name, _, _ := strings.Cut(line, ":"); strings.Contains(name, ".ko") {
				if first = moduleFile(dir, name); first != "" {
					break
				}
			}
		}
		if first != "" {
			break
		}
	}
	if first == "" {
		return "", fmt.Errorf("kernel modules in %s: no module listed in modules.order or modules.dep exists (run depmod for it)", dir)
	}
	data, err := ReadModule(filepath.Join(dir, first))
	if err != nil {
		return "", err
	}
	ef, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return "", fmt.Errorf("kernel module %s: %w", filepath.Join(dir, first), err)
	}
	sec := ef.Section(".modinfo")
	if sec == nil {
		return "", fmt.Errorf("kernel module %s has no .modinfo", filepath.Join(dir, first))
	}
	info, err := sec.Data()
	if err != nil {
		return "", fmt.Errorf("kernel module %s: %w", filepath.Join(dir, first), err)
	}
	for _, kv := range bytes.Split(info, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("vermagic=")); ok {
			rel, _, _ := bytes.Cut(v, []byte(" "))
			return string(rel), nil
		}
	}
	return "", fmt.Errorf("kernel module %s has no vermagic", filepath.Join(dir, first))
}

// moduleFile is name as a file in dir ("" if there is none):
// modules.order may list "x.ko" where the file is compressed ("x.ko.xz").
func moduleFile(dir, name string) string {
	for _, ext := range []string{"", ".xz", ".zst"} {
		if _, err := os.Stat(filepath.Join(dir, name+ext)); err == nil {
			return name + ext
		}
	}
	return ""
}

// CheckRelease refuses a kernel whose modules were built for another
// release, naming both paths: the guest could load none of them. A kernel
// image whose release cannot be read is taken as it is.
func CheckRelease(k Kernel) (release string, err error) {
	mods, err := ModulesRelease(k.Modules)
	if err != nil {
		return "", err
	}
	img, err := KernelRelease(k.Image)
	if err != nil {
		return "", err
	}
	if img != "" && img != mods {
		return "", fmt.Errorf("kernel %s is release %s but the modules in %s are for %s: give kernel.modules the directory of its own release", k.Image, img, k.Modules, mods)
	}
	return mods, nil
}
