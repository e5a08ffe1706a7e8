// Package generation records GitOps deploys: each commit the daemon tries
// becomes a numbered generation (commit, message, author, time, signer,
// the config file as it was, the outcome) persisted as
// generations/<number>.json with an atomic write, so a restarted daemon
// knows what runs, what last succeeded and what was interrupted.
package generation

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"microvm.dev/microvm/internal/apitypes"

	"microvm.dev/microvm/internal/state"
)

// Status is where a generation's deploy got to.
type Status = apitypes.GenerationStatus

// Statuses.
const (
	// Applying: the host is being changed to this generation (a daemon that
	// finds it at start completes the deploy or rolls it back).
	Applying = apitypes.Applying
	// Succeeded: applied and healthy; the fleet runs it.
	Succeeded = apitypes.Succeeded
	// Failed: refused before anything changed (invalid file, bad signature),
	// or failed with no earlier generation to go back to.
	Failed = apitypes.GenerationFailed
	// RolledBack: applied, found unhealthy, and the last good generation
	// was put back.
	RolledBack = apitypes.RolledBack
)

// Generation is one deploy attempt.
type Generation = apitypes.Generation

// Store keeps the generations of one state directory.
type Store struct {
	dir    string
	retain int
}

// Open returns the store under stateDir/generations keeping the last
// retain generations (default 20; the last good one is always kept).
func Open(stateDir string, retain int) *Store {
	if retain <= 0 {
		retain = 20
	}
	return &Store{dir: filepath.Join(stateDir, "generations"), retain: retain}
}

func (s *Store) path(n int) string { return filepath.Join(s.dir, fmt.Sprintf("%d.json", n)) }

// Save writes g durably (temp file, fsync, rename, directory fsync) and
// prunes old generations.
func (s *Store) Save(g *Generation) error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("generations: %w", err)
	}
	b, err := json.MarshalIndent(g, "", "  ")
	if err != nil {
		return err
	}
	if err := state.WriteFile(s.path(g.Number), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("generation %d: %w", g.Number, err)
	}
	return s.prune()
}

// List returns the retained generations, oldest first. A generation file
// that cannot be read is an error naming it: the daemon never invents state.
func (s *Store) List() ([]*Generation, error) {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("generations: %w", err)
	}
	var out []*Generation
	for _, e := range entries {
		n, err := strconv.Atoi(strings.TrimSuffix(e.Name(), ".json"))
		if err != nil || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		var g Generation
		b, err := os.ReadFile(s.path(n))
		if err != nil {
			return nil, fmt.Errorf("generation %d: %w", n, err)
		}
		if err := json.Unmarshal(b, &g); err != nil || g.Number != n {
			return nil, fmt.Errorf("generation %d: %s is corrupt: %v", n, s.path(n), err)
		}
		out = append(out, &g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Number < out[j].Number })
	return out, nil
}

// Get returns generation n.
func (s *Store) Get(n int) (*Generation, error) {
	gens, err := s.List()
	if err != nil {
		return nil, err
	}
	for _, g := range gens {
		if g.Number == n {
			return g, nil
		}
	}
	return nil, fmt.Errorf("no generation %d (retained: %s)", n, numbers(gens))
}

// Latest is the newest generation, or nil.
func Latest(gens []*Generation) *Generation {
	if len(gens) == 0 {
		return nil
	}
	return gens[len(gens)-1]
}

// LastGood is the newest succeeded generation, or nil.
func LastGood(gens []*Generation) *Generation {
	for i := len(gens) - 1; i >= 0; i-- {
		if gens[i].Status == Succeeded {
			return gens[i]
		}
	}
	return nil
}

// Next is the number the next generation gets.
func Next(gens []*Generation) int {
	if g := Latest(gens); g != nil {
		return g.Number + 1
	}
	return 1
}

func (s *Store) prune() error {
	gens, err := s.List()
	if err != nil {
		return err
	}
	good := LastGood(gens)
	for len(gens) > s.retain {
		g := gens[0]
		gens = gens[1:]
		if good != nil && g.Number == good.Number {
			continue
		}
		if err := os.Remove(s.path(g.Number)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

func numbers(gens []*Generation) string {
	if len(gens) == 0 {
		return "none"
	}
	var s []string
	for _, g := range gens {
		s = append(s, strconv.Itoa(g.Number))
	}
	return strings.Join(s, ", ")
}
