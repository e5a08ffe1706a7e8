package vmm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// ErrNotReady is in the chain of an error that says a guest did not
// become ready in time while its hypervisor ran on (a boot that stalled, a
// health check that kept failing), as opposed to a guest that said it
// failed or a hypervisor that exited: a supervisor may retry the first.
var ErrNotReady = errors.New("not ready in time")

// NotReady marks err as a readiness timeout (errors.Is(…, ErrNotReady));
// its message stays err's.
func NotReady(err error) error { return notReady{err} }

type notReady struct{ error }

func (e notReady) Is(target error) bool { return target == ErrNotReady }
func (e notReady) Unwrap() error        { return e.error }

// ReadyResult is what the guest reported when it became ready.
type ReadyResult struct {
	// Offset is where in the console log reading stopped (after the line).
	Offset int64
	// Line is the ready line itself.
	Line string
	// GuestUptime is the guest's uptime when it became ready, as it said.
	GuestUptime string
	// State is how an image's own init reported its start (running,
	// degraded, …; "" for microvm-init's workload VMs), and Failed the
	// units that failed.
	State  string
	Failed []string
}

// Readiness says how the guest came up: its init's state with the failed
// units named ("degraded: a.service, b.service"), or "" when it said none.
func (r ReadyResult) Readiness() string {
	if len(r.Failed) > 0 {
		return r.State + ": " + strings.Join(r.Failed, ", ")
	}
	return r.State
}

// WaitConsole follows the console log from offset until a line starts with
// readyPrefix (ready) or failPrefix (the guest said it failed), the process
// exits (exited closes) or the timeout passes. Each new console line is also
// given to echo when it is not nil.
func WaitConsole(path string, offset int64, readyPrefix, failPrefix string, timeout time.Duration, exited <-chan struct{}, echo func(string)) (ReadyResult, error) {
	deadline := time.Now().Add(timeout)
	var pending []byte
	consumed := offset // console bytes handled, up to the last full line
	var tail []string
	for {
		if f, err := os.Open(path); err == nil {
			f.Seek(offset, io.SeekStart)
			b, _ := io.ReadAll(f)
			f.Close()
			offset += int64(len(b))
			pending = append(pending, b...)
		}
		for {
			i := bytes.IndexByte(pending, '\n')
			if i < 0 {
				break
			}
			line := strings.TrimRight(string(pending[:i]), "\r")
			pending = pending[i+1:]
			consumed += int64(i + 1)
			if echo != nil {
				echo(line)
			}
			tail = append(tail, line)
			if len(tail) > 20 {
				tail = tail[1:]
			}
			if k := strings.Index(line, readyPrefix); k >= 0 {
				res := ReadyResult{Line: line[k:], Offset: consumed}
				for _, f := range strings.Fields(line[k:]) {
					key, v, _ := strings.Cut(f, "=")
					switch key {
					case "uptime":
						res.GuestUptime = v
					case "state":
						res.State = v
					case "failed":
						res.Failed = strings.Split(v, ",")
					}
				}
				return res, nil
			}
			if strings.Contains(line, failPrefix) {
				return ReadyResult{}, fmt.Errorf("the guest failed to boot: %s", line)
			}
		}
		select {
		case <-exited:
			return ReadyResult{}, fmt.Errorf("the hypervisor exited before the guest was ready; last console lines:\n  %s", strings.Join(tail, "\n  "))
		default:
		}
		if time.Now().After(deadline) {
			return ReadyResult{}, NotReady(fmt.Errorf("the guest was not ready within %s; last console lines:\n  %s", timeout, strings.Join(tail, "\n  ")))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
