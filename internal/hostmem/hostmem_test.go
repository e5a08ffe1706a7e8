package hostmem

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// mapping is one smaps entry: its header and its sizes in kB.
func mapping(header string, sizeKB, rssKB, pssKB int) string {
	return header + "\n" +
		"Size:           " + strconv.Itoa(sizeKB) + " kB\n" +
		"Rss:            " + strconv.Itoa(rssKB) + " kB\n" +
		"Pss:            " + strconv.Itoa(pssKB) + " kB\n" +
		"VmFlags: rd wr mr mw me ac sd\n"
}

func writeProc(t *testing.T, dir string, pid int, files map[string]string) {
	t.Helper()
	d := filepath.Join(dir, strconv.Itoa(pid))
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(d, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// A QEMU under TCG with a 1 GiB guest on a memfd shared with virtiofsd
// (as read off a real one): the guest's memory is the memfd mapping's
// resident size, counted once; the translation buffer (1 GiB too, but
// executable) and the kernel image are the hypervisor's own; virtiofsd's
// own is its PSS without the guest's pages it maps.
func TestMemoryOfAQEMUWithVirtiofsd(t *testing.T) {
	proc := t.TempDir()
	qemu := mapping("7fa74ffff000-7fa78ffff000 rw-s 00000000 00:01 1153                       /memfd:memory-backend-memfd (deleted)", 1048576, 133296, 132216) +
		mapping("7fa790000000-7fa7cffff000 rwxp 00000000 00:00 0 ", 1048572, 63488, 63488) +
		mapping("7fa744000000-7fa747edb000 rw-p 00000000 fe:00 819206                     /var/cache/microvm/kernels/pvh/k.vmlinux", 64364, 58412, 29206) +
		mapping("55d0c0000000-55d0c1000000 rw-p 00000000 00:00 0                          [heap]", 16384, 12000, 12000)
	writeProc(t, proc, 100, map[string]string{
		"smaps":   qemu,
		"stat":    "100 (qemu-system-x86) S 1 100 100 0 -1 4194560 1 0 0 0 650 215 0 0 20 0 3 0 1 2 3",
		"cmdline": "qemu-system-x86_64\x00-chardev\x00socket,id=fs0,path=/run/microvm/vms/m/store.sock\x00",
	})
	writeProc(t, proc, 101, map[string]string{
		"smaps":   mapping("7f64c8021000-7f64cc000000 ---p 00000000 00:00 0 ", 65404, 0, 0) + mapping("55e000000000-55e000100000 rw-p 00000000 00:00 0 [heap]", 1024, 900, 900),
		"stat":    "101 (virtiofsd) S 1 101 101 0 -1 4194560 1 0 0 0 3 2 0 0 20 0 1 0 1 2 3",
		"cmdline": "/usr/lib/qemu/virtiofsd\x00--socket-path=/run/microvm/vms/m/store.sock\x00-o\x00source=/store/base\x00",
	})
	writeProc(t, proc, 102, map[string]string{
		"smaps":   mapping("7f6488000000-7f64c8000000 rw-s 00000000 00:01 1153 /memfd:memory-backend-memfd (deleted)", 1048576, 2160, 1080) + mapping("55e100000000-55e100100000 rw-p 00000000 00:00 0 [heap]", 1024, 800, 800),
		"stat":    "102 (virtiofsd) S 101 101 101 0 -1 4194560 1 0 0 0 7 3 0 0 20 0 1 0 1 2 3",
		"cmdline": "/usr/lib/qemu/virtiofsd\x00--socket-path=/run/microvm/vms/m/store.sock\x00",
	})
	writeProc(t, proc, 103, map[string]string{"cmdline": "/usr/lib/qemu/virtiofsd\x00--socket-path=/run/microvm/vms/other/store.sock\x00"})
	p := Proc(proc)
	helpers, err := p.Helpers("virtiofsd", "/run/microvm/vms/m/store.sock")
	if err != nil || len(helpers) != 2 || helpers[0] != 101 || helpers[1] != 102 {
		t.Fatalf("helpers %v, %v; want virtiofsd's two processes (not QEMU, not another VM's)", helpers, err)
	}
	u, err := p.Memory(100, helpers, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	want := Usage{Guest: 133296 << 10, Hypervisor: (63488 + 29206 + 12000) << 10, Helpers: (900 + 800) << 10}
	if u != want {
		t.Errorf("usage %+v, want %+v", u, want)
	}
	if u.Total() != u.Guest+u.Overhead() {
		t.Error("Total is not Guest plus Overhead")
	}
	cpu, err := p.CPUSeconds(100, 101, 102, 999)
	if err != nil || cpu != float64(650+215+3+2+7+3)/100 {
		t.Errorf("cpu %v, %v", cpu, err)
	}
	// A helper gone meanwhile counts nothing.
	if u2, err := p.Memory(100, []int{101, 102, 999}, 1<<30); err != nil || u2 != u {
		t.Errorf("with a helper gone: %+v, %v", u2, err)
	}
	if _, err := p.Memory(999, nil, 1<<30); err == nil {
		t.Error("a hypervisor that is gone measured")
	}
}

// Without a memfd (a 9p or block store) the guest's memory is an
// anonymous mapping of its size.
func TestMemoryOfAnonymousGuest(t *testing.T) {
	proc := t.TempDir()
	writeProc(t, proc, 7, map[string]string{"smaps": mapping("7f0000000000-7f0020000000 rw-p 00000000 00:00 0 ", 524288, 200000, 200000) +
		mapping("7f1000000000-7f1000200000 r-xp 00000000 fe:00 12 /usr/bin/qemu-system-x86_64", 2048, 2048, 512)})
	u, err := Proc(proc).Memory(7, nil, 512<<20)
	if err != nil || u.Guest != 200000<<10 || u.Hypervisor != 512<<10 || u.Helpers != 0 {
		t.Errorf("usage %+v, %v", u, err)
	}
}

func TestAvailable(t *testing.T) {
	proc := t.TempDir()
	os.WriteFile(filepath.Join(proc, "meminfo"), []byte("MemTotal:       24000000 kB\nMemFree:         1000 kB\nMemAvailable:   23603284 kB\n"), 0o644)
	if a, err := Proc(proc).Available(); err != nil || a != 23603284<<10 {
		t.Errorf("available %d, %v", a, err)
	}
	os.WriteFile(filepath.Join(proc, "meminfo"), []byte("MemTotal:       24000000 kB\n"), 0o644)
	if _, err := Proc(proc).Available(); err == nil {
		t.Error("a meminfo without MemAvailable read")
	}
}
