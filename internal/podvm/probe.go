package podvm

// Probe is a container's readiness or liveness probe: one of TCP, HTTP
// (with Path) or Exec, with Kubernetes' timings in seconds.
type Probe struct {
	TCP, HTTP    int
	Path         string
	Exec         []string
	InitialDelay int
	Period       int
	Timeout      int
	// SuccessThreshold and FailureThreshold are how many results in a row
	// turn the probe's verdict.
	SuccessThreshold, FailureThreshold int
}

// defaults fills in Kubernetes' defaults for unset timings.
func (p *Probe) defaults() {
	if p.Period <= 0 {
		p.Period = 10
	}
	if p.Timeout <= 0 {
		p.Timeout = 1
	}
	if p.SuccessThreshold <= 0 {
		p.SuccessThreshold = 1
	}
	if p.FailureThreshold <= 0 {
		p.FailureThreshold = 3
	}
}
