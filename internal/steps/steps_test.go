package steps

import (
	"context"
	"errors"
	"slices"
	"testing"
)

// A failing step undoes the steps before it, newest first, and not itself
// nor the ones after it.
func TestFailureUndoesInReverse(t *testing.T) {
	var log []string
	step := func(name string, fail bool) Step {
		return Step{Name: name,
			Do: func(context.Context) error {
				log = append(log, "do "+name)
				if fail {
					return errors.New(name + " failed")
				}
				return nil
			},
			Undo: func() { log = append(log, "undo "+name) }}
	}
	var r Runner
	err := r.Run(context.Background(), step("a", false), step("b", false), step("c", true), step("d", false))
	if err == nil || err.Error() != "c failed" {
		t.Fatalf("err = %v", err)
	}
	want := []string{"do a", "do b", "do c", "undo b", "undo a"}
	if !slices.Equal(log, want) {
		t.Errorf("log = %v, want %v", log, want)
	}
	if names := len(r.Timings()); names != 3 {
		t.Errorf("%d timings, want 3 (a, b, c)", names)
	}
}

// Steps of an earlier Run are undone by a later failure until Success.
func TestLaterFailureUndoesEarlierRuns(t *testing.T) {
	undone := 0
	ok := Step{Name: "ok", Do: func(context.Context) error { return nil }, Undo: func() { undone++ }}
	bad := Step{Name: "bad", Do: func(context.Context) error { return errors.New("no") }}
	var r Runner
	r.Run(context.Background(), ok)
	r.Run(context.Background(), ok, bad)
	if undone != 2 {
		t.Errorf("undone %d, want 2", undone)
	}
	undone = 0
	r.Run(context.Background(), ok)
	r.Success()
	r.Run(context.Background(), bad)
	if undone != 0 {
		t.Errorf("undone %d after Success, want 0", undone)
	}
}

// A cancelled context stops before the next step and undoes the rest.
func TestCancelledContextStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	undone, ran := false, false
	var r Runner
	err := r.Run(ctx,
		Step{Name: "first", Do: func(context.Context) error { cancel(); return nil }, Undo: func() { undone = true }},
		Step{Name: "second", Do: func(context.Context) error { ran = true; return nil }})
	if !errors.Is(err, context.Canceled) || ran || !undone {
		t.Errorf("err %v, second ran %v, first undone %v", err, ran, undone)
	}
}
