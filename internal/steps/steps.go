// Package steps runs work as an ordered list of named steps, each timed
// and each with an optional undo: when a step fails (or the context is
// cancelled between steps), the steps already done are undone in reverse
// order, so a failure leaves nothing half-made. Until Success is called a
// later failure can still undo everything done so far (the revert pattern).
package steps

import (
	"context"
	"time"

	"microvm.dev/microvm/internal/apitypes"
)

// Step is one named piece of work.
type Step struct {
	// Name says what the step does, for timings and logs.
	Name string
	// Do does the work. A step that fails cleans up after itself; its own
	// Undo is not called.
	Do func(ctx context.Context) error
	// Undo reverses a step that succeeded (nil: nothing to reverse).
	Undo func()
}

// Timing is how long one step took.
type Timing = apitypes.StepTiming

// Runner runs steps and remembers how to undo the ones that succeeded.
// Its zero value is ready to use; it is not safe for concurrent use.
type Runner struct {
	// Observe, when set, is told each step's timing as it ends.
	Observe func(Timing)
	timings []Timing
	undo    []func()
}

// Run runs list in order and stops at the first failure. On a failure, or
// when ctx is cancelled before a step, everything done so far (by this and
// earlier calls since the last Success) is undone in reverse and the error
// returned.
func (r *Runner) Run(ctx context.Context, list ...Step) error {
	for _, s := range list {
		if err := ctx.Err(); err != nil {
			r.Undo()
			return err
		}
		t0 := time.Now()
		err := s.Do(ctx)
		t := Timing{Name: s.Name, Seconds: time.Since(t0).Seconds()}
		r.timings = append(r.timings, t)
		if r.Observe != nil {
			r.Observe(t)
		}
		if err != nil {
			r.Undo()
			return err
		}
		if s.Undo != nil {
			r.undo = append(r.undo, s.Undo)
		}
	}
	return nil
}

// Undo reverses every step done since the last Success, newest first.
func (r *Runner) Undo() {
	for i := len(r.undo) - 1; i >= 0; i-- {
		r.undo[i]()
	}
	r.undo = nil
}

// Success keeps what was done: nothing is undone any more.
func (r *Runner) Success() { r.undo = nil }

// Timings are the steps' timings so far, in the order they ran.
func (r *Runner) Timings() []Timing { return append([]Timing(nil), r.timings...) }
