package backup

import (
	"os"
)

// blockSize is the unit sparseWriter looks for zeros in.
const blockSize = 4096

// sparseWriter writes a stream to a file, seeking over blocks of zeros so
// that they stay holes, as the volume they came from had them.
type sparseWriter struct {
	f   *os.File
	off int64
	buf []byte // a partial block carried to the next Write
}

func (w *sparseWriter) Write(p []byte) (int, error) {
	n := len(p)
	if len(w.buf) > 0 {
		need := blockSize - len(w.buf)
		if len(p) < need {
			w.buf = append(w.buf, p...)
			return n, nil
		}
		w.buf = append(w.buf, p[:need]...)
		if err := w.block(w.buf); err != nil {
			return 0, err
		}
		w.buf, p = w.buf[:0], p[need:]
	}
	for len(p) >= blockSize {
		if err := w.block(p[:blockSize]); err != nil {
			return 0, err
		}
		p = p[blockSize:]
	}
	w.buf = append(w.buf, p...)
	return n, nil
}

// block writes one block, or skips it when it is all zeros.
func (w *sparseWriter) block(b []byte) error {
	if !zero(b) {
		if _, err := w.f.WriteAt(b, w.off); err != nil {
			return err
		}
	}
	w.off += int64(len(b))
	return nil
}

// finish writes what is left and sets the file's size.
func (w *sparseWriter) finish() error {
	if len(w.buf) > 0 {
		if err := w.block(w.buf); err != nil {
			return err
		}
		w.buf = nil
	}
	return w.f.Truncate(w.off)
}

func zero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
