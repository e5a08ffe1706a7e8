package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// chunkSize and chunksAhead bound how far one layer's stream runs ahead of
// the unpacker: 16 × 128 KiB per layer in flight.
const (
	chunkSize   = 128 << 10
	chunksAhead = 16
)

// pipeline turns an image's layers into uncompressed streams, in order.
// Up to Options.Jobs layers are fetched and decompressed at once, each
// streaming to the unpacker while its compressed bytes are written to the
// blob cache (registry pulls), so nothing is read twice. With Jobs 1 a
// layer is started only once the previous one is unpacked.
type pipeline struct {
	s      *Store
	layers []v1.Layer
	// diffIDs are the layers' expected uncompressed digests. They are set,
	// and the tree is to be made, once ready is closed: a layer is read
	// from the cache, checked, cached or reported only after that.
	diffIDs []v1.Hash
	ready   chan struct{}
	cache   bool
	o       Options
	// chunks recycles chunk buffers (*[]byte of chunkSize) once the
	// unpacker has read them.
	chunks sync.Pool
}

// reader returns the stream of ls's chunks, recycling each once read.
func (p *pipeline) reader(ls *layerStream) *chunkReader {
	return &chunkReader{ch: ls.chunks, pool: &p.chunks}
}

// layerStream is one layer's uncompressed bytes in chunks. done is closed
// when the producer has finished (err is then set); consumed is closed by
// the unpacker once the layer is applied.
type layerStream struct {
	chunks   chan []byte
	done     chan struct{}
	consumed chan struct{}
	err      error
}

// start begins producing every layer and returns their streams in order
// and the function that stops and waits for the producers.
func (p *pipeline) start(ctx context.Context) ([]*layerStream, func()) {
	ctx, cancel := context.WithCancel(ctx)
	streams := make([]*layerStream, len(p.layers))
	for i := range streams {
		streams[i] = &layerStream{chunks: make(chan []byte, chunksAhead), done: make(chan struct{}), consumed: make(chan struct{})}
	}
	next := make(chan int, len(p.layers))
	for i := range p.layers {
		next <- i
	}
	close(next)
	jobs := p.o.jobs()
	var wg sync.WaitGroup
	for range min(jobs, max(1, len(p.layers))) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				ls := streams[i]
				if jobs == 1 && i > 0 {
					select { // strictly one layer at a time
					case <-streams[i-1].consumed:
					case <-ctx.Done():
					}
				}
				ls.err = p.produce(ctx, i, ls.chunks)
				close(ls.chunks)
				close(ls.done)
			}
		}()
	}
	return streams, func() { cancel(); wg.Wait() }
}

// produce streams layer i uncompressed into chunks, checking it against
// its diff id, and caches the compressed blob of a registry layer.
func (p *pipeline) produce(ctx context.Context, i int, chunks chan<- []byte) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	l := p.layers[i]
	var src io.Reader
	var tmp *os.File
	var blob string
	cached := false
	defer func() {
		// A cached blob that fails to unpack (damaged on disk) is dropped
		// so the next pull fetches it again.
		if err != nil && cached && ctx.Err() == nil {
			os.Remove(blob)
		}
	}()
	switch {
	case p.cache:
		d, err := l.Digest()
		if err != nil {
			return err
		}
		if d.Algorithm != "sha256" {
			return fmt.Errorf("unsupported digest algorithm %s", d.Algorithm)
		}
		blob = p.s.BlobPath(d.String())
		if f, err := os.Open(blob); err == nil {
			defer f.Close()
			// Cached: nothing to win by starting early.
			if err := p.wait(ctx); err != nil {
				return err
			}
			src, cached = f, true
			p.o.emit(Event{Kind: "cached", Layer: i + 1, Layers: len(p.layers), Digest: d.String()})
			break
		}
		if err := os.MkdirAll(filepath.Dir(blob), 0o700); err != nil {
			return err
		}
		// go-containerregistry's reader checks the compressed digest at its
		// end; the diff id check below covers the content as unpacked.
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		defer rc.Close()
		if tmp, err = os.CreateTemp(filepath.Dir(blob), d.Hex[:12]+".partial-"); err != nil {
			return err
		}
		defer func() {
			tmp.Close()
			os.Remove(tmp.Name())
		}()
		src = io.TeeReader(ctxReader{ctx, rc}, tmp)
	default:
		if err := p.wait(ctx); err != nil {
			return err
		}
		rc, err := l.Uncompressed()
		if err != nil {
			return err
		}
		defer rc.Close()
		src = ctxReader{ctx, rc}
	}
	rd := src
	if p.cache {
		var err error
		if rd, err = decompress(src); err != nil {
			return err
		}
	}
	h := sha256.New()
	var n int64
	for {
		bp, _ := p.chunks.Get().(*[]byte)
		if bp == nil {
			b := make([]byte, chunkSize)
			bp = &b
		}
		buf := *bp
		m, err := io.ReadFull(rd, buf)
		if m > 0 {
			h.Write(buf[:m])
			n += int64(m)
			select {
			case chunks <- buf[:m]:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			if tmp != nil {
				// A damaged download: its digest names the cause best.
				if _, derr := io.Copy(io.Discard, src); derr != nil {
					return derr
				}
			}
			return err
		}
	}
	if tmp != nil {
		// Read the rest of the compressed stream: its digest is checked at its end.
		if _, err := io.Copy(io.Discard, src); err != nil {
			return err
		}
	}
	if err := p.wait(ctx); err != nil {
		return err
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != p.diffIDs[i].String() {
		return fmt.Errorf("the layer unpacks to %s, but the image config says %s", got, p.diffIDs[i])
	}
	if tmp != nil {
		if err := tmp.Close(); err != nil {
			return err
		}
		if err := os.Rename(tmp.Name(), blob); err != nil {
			return err
		}
		fi, _ := os.Stat(blob)
		var size int64
		if fi != nil {
			size = fi.Size()
		}
		p.o.emit(Event{Kind: "fetched", Layer: i + 1, Layers: len(p.layers), Digest: "sha256:" + filepath.Base(blob), Bytes: size})
	}
	return nil
}

// wait returns once the tree is to be made, or ctx's error.
func (p *pipeline) wait(ctx context.Context) error {
	select {
	case <-p.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// chunkReader reads a channel of chunks as a stream, handing each chunk's
// buffer back to pool once it is read.
type chunkReader struct {
	ch   <-chan []byte
	pool *sync.Pool
	buf  []byte // the current chunk's whole buffer
	cur  []byte // what is left of it to read
}

func (c *chunkReader) Read(b []byte) (int, error) {
	for len(c.cur) == 0 {
		if c.buf != nil {
			full := c.buf[:cap(c.buf)]
			c.pool.Put(&full)
			c.buf = nil
		}
		next, ok := <-c.ch
		if !ok {
			return 0, io.EOF
		}
		c.buf, c.cur = next, next
	}
	n := copy(b, c.cur)
	c.cur = c.cur[n:]
	return n, nil
}
