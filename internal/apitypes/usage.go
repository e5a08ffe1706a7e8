package apitypes

import "time"

// HostMemory is what a VM costs its host in memory, as last measured, in
// bytes (a status's hostMemory).
type HostMemory struct {
	// Guest is the guest's memory resident on the host (free page
	// reporting gives back what the guest frees).
	Guest int64 `json:"guestBytes"`
	// Hypervisor is the hypervisor's own memory (its proportional set
	// size without the guest's).
	Hypervisor int64 `json:"hypervisorBytes"`
	// Helpers is its helpers' own (virtiofsd's).
	Helpers int64 `json:"helperBytes"`
	// Total is all of it.
	Total int64 `json:"totalBytes"`
	// Balloon is the memory the host has taken back from the guest under
	// pressure (host.reclaim; 0: none).
	Balloon int64 `json:"balloonBytes,omitempty"`
	// At is when it was measured.
	At time.Time `json:"at"`
}

// VMSample is one measure of a running VM, as the daemon keeps them for
// an hour (GET /v1/vms/{name}/samples; GET /v1/samples has every VM's).
type VMSample struct {
	Time time.Time `json:"time"`
	// GuestBytes, HypervisorBytes, HelperBytes and BalloonBytes are its
	// memory as HostMemory says.
	GuestBytes      int64 `json:"guestBytes"`
	HypervisorBytes int64 `json:"hypervisorBytes"`
	HelperBytes     int64 `json:"helperBytes"`
	BalloonBytes    int64 `json:"balloonBytes,omitempty"`
	// CPUSeconds is the CPU time its hypervisor and helpers have used since
	// they started (a graph shows its rate).
	CPUSeconds float64 `json:"cpuSeconds"`
	// ReceivedBytes and SentBytes are what the VM's network interface has
	// received and sent since its TAP was made.
	ReceivedBytes uint64 `json:"receivedBytes"`
	SentBytes     uint64 `json:"sentBytes"`
}

// Memory is the sample's memory as a HostMemory.
func (s VMSample) Memory() HostMemory {
	return HostMemory{Guest: s.GuestBytes, Hypervisor: s.HypervisorBytes, Helpers: s.HelperBytes,
		Total: s.GuestBytes + s.HypervisorBytes + s.HelperBytes, Balloon: s.BalloonBytes, At: s.Time}
}

// KSMStats are the host's kernel samepage merging counters
// (/sys/kernel/mm/ksm), in pages but for ProfitBytes.
type KSMStats struct {
	Running      bool  `json:"running"`
	PagesShared  int64 `json:"pagesShared"`
	PagesSharing int64 `json:"pagesSharing"`
	// ProfitBytes is what merging saves, less its own metadata (the
	// kernel's general_profit).
	ProfitBytes int64 `json:"profitBytes"`
}
