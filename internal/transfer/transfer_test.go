package transfer

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// sparse makes a 256 MiB file with 3 MiB of data, a zeroed block inside it.
func sparse(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data := make([]byte, 1<<20)
	for _, off := range []int64{0, 100 << 20, 255 << 20} {
		rand.Read(data)
		clear(data[8192:16384])
		if _, err := f.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(256 << 20); err != nil {
		t.Fatal(err)
	}
}

func allocated(t *testing.T, path string) int64 {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// A sparse file arrives with the same bytes and holes, having sent only
// its data; a stream changed or cut on the way leaves no file.
func TestSendReceive(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	sparse(t, src)
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var wire bytes.Buffer
	sent, err := Send(&wire, f)
	if err != nil {
		t.Fatal(err)
	}
	if sent.Size != 256<<20 || sent.Data != 3<<20-3*8192 || sent.Wire != int64(wire.Len()) {
		t.Errorf("sent %+v (wire %d), want 256 MiB of which 3 MiB less the zeroed blocks", sent, wire.Len())
	}
	dst := filepath.Join(dir, "dst.img")
	got, err := Receive(bytes.NewReader(wire.Bytes()), dst)
	if err != nil {
		t.Fatal(err)
	}
	if got.SHA256 != sent.SHA256 || got.Data != sent.Data {
		t.Errorf("received %+v, sent %+v", got, sent)
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(dst)
	if !bytes.Equal(a, b) {
		t.Error("the received file's bytes differ")
	}
	if n := allocated(t, dst); n > 4<<20 {
		t.Errorf("the received file has %d bytes allocated, want its holes kept", n)
	}

	// A byte changed on the way (inside the compressed stream), and a
	// stream cut short.
	bad := bytes.Clone(wire.Bytes())
	bad[len(bad)/2] ^= 0x40
	for name, stream := range map[string][]byte{"changed": bad, "cut": wire.Bytes()[:wire.Len()/2]} {
		out := filepath.Join(dir, name+".img")
		if _, err := Receive(bytes.NewReader(stream), out); err == nil {
			t.Errorf("%s stream: received without an error", name)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("%s stream: a file was left behind (%v)", name, err)
		}
	}
	if _, err := Receive(bytes.NewReader(wire.Bytes()), dst); !os.IsExist(err) {
		t.Errorf("receive over an existing file: %v, want it refused", err)
	}
}
