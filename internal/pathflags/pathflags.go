// Package pathflags makes a command's path flags absolute once, where the
// flags are read: a relative --state-dir then names the same directory
// everywhere it is used later (a hypervisor's confinement, a VM's run
// record, a child process started elsewhere), as it did where the command
// ran.
package pathflags

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/pflag"
)

// Absolute makes each named flag of fs that holds a relative path
// absolute, against the working directory. Flags not in fs, empty ones
// and absolute ones are left as they are.
func Absolute(fs *pflag.FlagSet, names ...string) error {
	for _, name := range names {
		f := fs.Lookup(name)
		if f == nil || f.Value.String() == "" || filepath.IsAbs(f.Value.String()) {
			continue
		}
		abs, err := filepath.Abs(f.Value.String())
		if err != nil {
			return fmt.Errorf("--%s %s: %w", name, f.Value.String(), err)
		}
		if err := f.Value.Set(abs); err != nil {
			return fmt.Errorf("--%s: %w", name, err)
		}
	}
	return nil
}
