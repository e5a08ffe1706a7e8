package guest

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"

	"microvm.dev/microvm/internal/config"
)

// fakeModules writes a modules directory shaped like a real one.
func fakeModules(t *testing.T, dep string, builtin string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte(builtin), 0o644)
	for _, line := range strings.Split(dep, "\n") {
		mod, _, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		p := filepath.Join(dir, mod)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte("module "+mod), 0o644)
	}
	return dir
}

const dep = `kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/net/virtio_net.ko: kernel/net/core/failover.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/net/core/failover.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/fs/overlayfs/overlay.ko:
kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/crypto/crc32c_generic.ko:
kernel/net/9p/9pnet.ko:
kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/netfs/netfs.ko
kernel/fs/netfs/netfs.ko:
kernel/drivers/unrelated/nope.ko:
`

func TestResolveModulesOrder(t *testing.T) {
	ms, err := ResolveModules(fakeModules(t, dep, ""))
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, f := range ms.Files {
		pos[normName(f)] = i
	}
	for mod, deps := range map[string][]string{
		"virtio_net": {"failover", "virtio_ring", "virtio"},
		"ext4":       {"jbd2", "mbcache", "crc32c_generic"},
		"9p":         {"9pnet", "netfs"},
	} {
		for _, d := range deps {
			if pos[d] >= pos[mod] {
				t.Errorf("%s must load before %s: %v", d, mod, ms.Files)
			}
		}
	}
	if _, ok := pos["nope"]; ok {
		t.Error("an unneeded module was included")
	}
}

func TestResolveModulesBuiltinAndMissing(t *testing.T) {
	// ext4 built in: fine, and not loaded.
	d := strings.Replace(dep, "kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko\n", "", 1)
	ms, err := ResolveModules(fakeModules(t, d, "kernel/fs/ext4/ext4.ko\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range ms.Files {
		if normName(f) == "ext4" {
			t.Error("a built-in module was listed")
		}
	}
	// overlay missing entirely: a clear error.
	d = strings.Replace(dep, "kernel/fs/overlayfs/overlay.ko:\n", "", 1)
	_, err = ResolveModules(fakeModules(t, d, ""))
	if err == nil || !strings.Contains(err.Error(), "lack overlay") {
		t.Fatalf("want a missing-overlay error, got %v", err)
	}
}

func TestResolveKernel(t *testing.T) {
	cache := t.TempDir()
	_, err := ResolveKernel(config.Kernel{}, "aarch64", "x86_64", cache)
	if err == nil || !strings.Contains(err.Error(), "run scripts/fetch-kernel.sh arm64") {
		t.Fatalf("want advice to fetch the arm64 kernel, got %v", err)
	}
	for _, rel := range []string{"6.1.0-1-arm64", "6.1.0-9-arm64"} {
		d := filepath.Join(cache, "arm64", rel)
		os.MkdirAll(filepath.Join(d, "modules"), 0o755)
		os.WriteFile(filepath.Join(d, "vmlinuz"), []byte("k"), 0o644)
		os.WriteFile(filepath.Join(d, "modules", "modules.dep"), nil, 0o644)
	}
	k, err := ResolveKernel(config.Kernel{}, "aarch64", "x86_64", cache)
	if err != nil || !strings.HasSuffix(k.Image, "6.1.0-9-arm64/vmlinuz") {
		t.Fatalf("want the newest cached kernel, got %+v, %v", k, err)
	}
	if _, err := ResolveKernel(config.Kernel{Path: "/nonexistent/vmlinuz", Modules: "/x"}, "x86_64", "x86_64", cache); err == nil {
		t.Error("a missing kernel path was accepted")
	}
}

// readArchive reads one newc archive's records by name.
func readArchive(t *testing.T, data []byte) map[string]cpio.Record {
	t.Helper()
	recs := map[string]cpio.Record{}
	rr := cpio.Newc.Reader(bytes.NewReader(data))
	for {
		rec, err := rr.ReadRecord()
		if err == io.EOF || (err == nil && rec.Name == cpio.Trailer) {
			return recs
		}
		if err != nil {
			t.Fatalf("read archive: %v", err)
		}
		recs[rec.Name] = rec
	}
}

func content(t *testing.T, r cpio.Record) string {
	t.Helper()
	b, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestInitramfs(t *testing.T) {
	mods := fakeModules(t, dep, "")
	initBin := filepath.Join(t.TempDir(), "microvm-init")
	os.WriteFile(initBin, []byte("#!init"), 0o755)
	b := Initramfs{Init: initBin, CacheDir: t.TempDir()}
	base, cached, err := b.Base(Kernel{Image: "/k", Modules: mods})
	if err != nil || cached {
		t.Fatalf("first build: cached=%v, %v", cached, err)
	}
	if again, cached, err := b.Base(Kernel{Image: "/k", Modules: mods}); err != nil || !cached || again != base {
		t.Fatalf("second build should reuse %s: %s cached=%v %v", base, again, cached, err)
	}
	os.WriteFile(initBin, []byte("#!init v2"), 0o755)
	if changed, cached, _ := b.Base(Kernel{Image: "/k", Modules: mods}); cached || changed == base {
		t.Fatal("a new microvm-init must make a new base archive")
	}
	dst := filepath.Join(t.TempDir(), "initramfs.cpio")
	spec := &Spec{Name: "vm1", Net: NetSpec{MAC: "02:00:00:00:00:01", Address: "10.1.0.2/24", Gateway: "10.1.0.1"}, SSH: SSHSpec{HostKey: "secret"}}
	if err := WriteVM(base, dst, spec); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dst); fi.Mode().Perm() != 0o600 {
		t.Errorf("the VM's initramfs holds its host key; mode %v, want 0600", fi.Mode())
	}
	data, _ := os.ReadFile(dst)
	baseData, _ := os.ReadFile(base)
	if !bytes.HasPrefix(data, baseData) {
		t.Fatal("the VM's initramfs does not start with the shared base archive")
	}
	recs := readArchive(t, baseData)
	perVM := readArchive(t, data[len(baseData):])
	console, ok := recs["dev/console"]
	if !ok || console.Mode&cpio.S_IFMT != cpio.S_IFCHR || console.Rmajor != 5 || console.Rminor != 1 {
		t.Errorf("dev/console missing or not char 5:1: %+v", console.Info)
	}
	if _, ok := recs["init"]; !ok {
		t.Error("no /init")
	}
	order, ok := recs[ModulesOrderPath]
	if !ok {
		t.Fatal("no module order")
	}
	if ob := content(t, order); !strings.Contains(ob, "/lib/microvm/modules/virtio_net.ko") {
		t.Errorf("module order:\n%s", ob)
	}
	if deps, ok := recs[ModulesDepsPath]; !ok || !strings.Contains(content(t, deps), "/lib/microvm/modules/virtio_net.ko") {
		t.Errorf("no module dependency list with virtio_net: %v", ok)
	}
	sr, ok := perVM[SpecPath]
	if !ok || len(perVM) != 1 {
		t.Fatalf("the second archive should hold only the spec: %v", perVM)
	}
	var got Spec
	if err := json.Unmarshal([]byte(content(t, sr)), &got); err != nil || got.Name != "vm1" || got.SSH.HostKey != "secret" {
		t.Errorf("spec = %+v, %v", got, err)
	}
}

// TestModulePlan: a VM loads only what its spec needs, with every
// dependency, in waves whose modules depend only on earlier waves.
func TestModulePlan(t *testing.T) {
	list := strings.Join([]string{
		ModuleLine("/m/virtio.ko", nil),
		ModuleLine("/m/virtio_ring.ko", nil),
		ModuleLine("/m/virtio_pci.ko", []string{"kernel/virtio.ko", "kernel/virtio_ring.ko"}),
		ModuleLine("/m/failover.ko", nil),
		ModuleLine("/m/net_failover.ko", []string{"failover.ko"}),
		ModuleLine("/m/virtio_net.ko", []string{"net_failover.ko", "failover.ko"}),
		ModuleLine("/m/virtio_blk.ko", nil),
		ModuleLine("/m/overlay.ko", nil),
		ModuleLine("/m/crc16.ko", nil),
		ModuleLine("/m/jbd2.ko", nil),
		ModuleLine("/m/ext4.ko.xz", []string{"crc16.ko", "jbd2.ko"}),
		ModuleLine("/m/fuse.ko", nil),
		ModuleLine("/m/virtiofs.ko", []string{"fuse.ko"}),
		ModuleLine("/m/9pnet.ko", nil),
		ModuleLine("/m/9p.ko", []string{"9pnet.ko"}),
		ModuleLine("/m/9pnet_virtio.ko", []string{"9pnet.ko"}),
	}, "\n")
	plan := func(spec *Spec) string {
		var waves []string
		for _, w := range ModulePlan(list, NeededModules(spec)) {
			waves = append(waves, strings.Join(w, " "))
		}
		return strings.Join(waves, " | ")
	}
	got := plan(&Spec{Store: ShareSpec{FSType: "9p"}})
	if want := "/m/virtio.ko /m/virtio_ring.ko /m/failover.ko /m/virtio_blk.ko /m/overlay.ko /m/9pnet.ko | /m/virtio_pci.ko /m/net_failover.ko /m/9p.ko /m/9pnet_virtio.ko | /m/virtio_net.ko"; got != want {
		t.Errorf("9p store, no volumes:\n got %s\nwant %s", got, want)
	}
	got = plan(&Spec{Store: ShareSpec{FSType: "ext4"}})
	if !strings.Contains(got, "/m/ext4.ko.xz") || strings.Contains(got, "9p") || strings.Contains(got, "fuse") {
		t.Errorf("block store: %s", got)
	}
	got = plan(&Spec{Store: ShareSpec{FSType: "virtiofs"}, Volumes: []VolumeSpec{{Name: "data"}}})
	if !strings.Contains(got, "/m/fuse.ko") || !strings.Contains(got, "/m/jbd2.ko") || strings.Contains(got, "9p") {
		t.Errorf("virtiofs store with a volume: %s", got)
	}
	if i, j := strings.Index(got, "/m/jbd2.ko"), strings.Index(got, "/m/ext4.ko.xz"); i > j || !strings.Contains(got[i:j], "|") {
		t.Errorf("ext4 in the wave of its dependency: %s", got)
	}
}

func TestIdentityRoundTrip(t *testing.T) {
	id := Identity{Generation: "g1", Name: "c1", Net: NetSpec{MAC: "02:00:00:00:00:09", Address: "10.9.0.2/24"},
		MachineID: "0123456789abcdef0123456789abcdef", Seed: []byte{1, 2, 3}, ClockNS: 42,
		Secrets: []SecretFile{{Path: "/run/secrets/job", Mode: 0o400, Owner: "app", Data: []byte("token\n")}}}
	b, err := EncodeIdentity(id)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != IdentityDiskSize {
		t.Fatalf("disk is %d bytes", len(b))
	}
	got, err := DecodeIdentity(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "c1" || got.Net.Address != "10.9.0.2/24" || string(got.Seed) != "\x01\x02\x03" || got.ClockNS != 42 ||
		len(got.Secrets) != 1 || string(got.Secrets[0].Data) != "token\n" || got.Secrets[0].Owner != "app" {
		t.Fatalf("round trip: %+v", got)
	}
	// Secrets too large for the disk are refused, not cut.
	id.Secrets[0].Data = make([]byte, IdentityDiskSize)
	if _, err := EncodeIdentity(id); err == nil || !strings.Contains(err.Error(), "over the disk's") {
		t.Errorf("an identity over the disk: %v", err)
	}
	if _, err := DecodeIdentity(make([]byte, IdentityDiskSize)); err == nil {
		t.Fatal("a zeroed disk decoded")
	}
	b[len(identityMagic)+3] = 0xff // a length past the disk
	if _, err := DecodeIdentity(b); err == nil {
		t.Fatal("a damaged length decoded")
	}
}
