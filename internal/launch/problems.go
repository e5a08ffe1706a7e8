package launch

import (
	"errors"

	"microvm.dev/microvm/internal/config"
)

// KeyedError is an error about one key of the file (a secret this host
// cannot decrypt, an image that cannot run what the VM asks): Key is the
// key's path, Detail the cause.
type KeyedError interface {
	error
	Key() string
	Detail() string
}

// Problems turns err (joined errors included) into problems of file: each
// KeyedError at its key; any other error, failing closed, at fallback.
func Problems(file, fallback string, err error) config.Problems {
	if err == nil {
		return nil
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	var out config.Problems
	for _, e := range errs {
		var ke KeyedError
		if errors.As(e, &ke) {
			out = append(out, config.Problem{File: file, Path: ke.Key(), Message: ke.Detail()})
			continue
		}
		out = append(out, config.Problem{File: file, Path: fallback, Message: e.Error()})
	}
	return out
}
