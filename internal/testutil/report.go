package testutil

import (
	"encoding/json"
	"os"
	"sync"
	"testing"
)

// FaultResult is one row of docs/reliability.md: a fault or bad input
// tried, how often, and what was found.
type FaultResult struct {
	Fault     string  `json:"fault"`
	Trials    int     `json:"trials"`
	LostVMs   int     `json:"lostVMs"`
	LostBytes int64   `json:"lostBytes"`
	Converge  float64 `json:"convergeSeconds,omitempty"`
	Result    string  `json:"result"`
	Test      string  `json:"test"`
}

var reportMu sync.Mutex

// Report appends r to the file named by $MICROVM_RELIABILITY_REPORT (JSON
// lines), from which scripts/reliability-report.sh renders
// docs/reliability.md; without the variable it only logs r.
func Report(t testing.TB, r FaultResult) {
	t.Helper()
	r.Test = t.Name()
	t.Logf("reliability: %+v", r)
	path := os.Getenv("MICROVM_RELIABILITY_REPORT")
	if path == "" {
		return
	}
	reportMu.Lock()
	defer reportMu.Unlock()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Errorf("reliability report: %v", err)
		return
	}
	defer f.Close()
	b, _ := json.Marshal(r)
	f.Write(append(b, '\n'))
}
