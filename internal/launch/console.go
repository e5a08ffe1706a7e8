package launch

import (
	"fmt"
	"io"
	"os"
)

// MaxConsoleLog is the size a console log is rotated at.
const MaxConsoleLog = 8 << 20

// RotateConsole copies the console log at path to path.1 and truncates it
// when it is over maxSize. The hypervisor writes it in append mode, so it
// continues at the new end; a line written between the copy and the
// truncation can be lost (the usual copy-truncate trade-off, taken so the
// hypervisor need not reopen anything).
func RotateConsole(path string, maxSize int64) (bool, error) {
	fi, err := os.Stat(path)
	if err != nil || fi.Size() <= maxSize {
		return false, nil
	}
	src, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer src.Close()
	dst, err := os.OpenFile(path+".1", os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return false, err
	}
	_, err = io.Copy(dst, src)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, fmt.Errorf("rotate %s: %w", path, err)
	}
	if err := os.Truncate(path, 0); err != nil {
		return false, fmt.Errorf("rotate %s: %w", path, err)
	}
	return true, nil
}
