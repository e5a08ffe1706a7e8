package apitypes

import "time"

// HostInfo answers GET /v1/host: the host's network against the applied
// file, the loaded ruleset, and the images in the store.
type HostInfo struct {
	Network *NetworkStatus `json:"network,omitempty"`
	// Firewall is the ruleset the applied file renders (nft's input).
	Firewall string  `json:"firewall"`
	Images   []Image `json:"images"`
	// Memory is the host's memory as the daemon sees it.
	Memory HostMemoryState `json:"memory"`
}

// HostMemoryState is the host's memory: what is available, whether VMs'
// memory is being taken back (host.reclaim), and its samepage merging.
type HostMemoryState struct {
	AvailableBytes int64 `json:"availableBytes"`
	// Short says the host is short of memory: the VMs with a memoryMin
	// are ballooned down to it.
	Short bool `json:"short"`
	// KSM is the host's samepage merging (nil where the kernel has none).
	KSM *KSMStats `json:"ksm,omitempty"`
}

// NetworkStatus is the host's network as microvm finds it.
type NetworkStatus struct {
	Uplink string      `json:"uplink,omitempty"`
	Links  []LinkState `json:"links"`
	// Loaded is the table as read back from the kernel.
	Loaded *FirewallLoaded `json:"firewall"`
	// WantHash is the hash of the ruleset the file renders.
	WantHash string `json:"wantHash"`
	// InSync says the links and the table are what the file makes.
	InSync     bool     `json:"inSync"`
	MissingVMs []string `json:"missingVMs,omitempty"`
	Warnings   []string `json:"warnings,omitempty"`
}

// LinkState is one of microvm's interfaces on the host.
type LinkState struct {
	Name   string   `json:"name"`
	VM     string   `json:"vm"`
	Type   string   `json:"type"`
	Up     bool     `json:"up"`
	Master string   `json:"master,omitempty"`
	Addrs  []string `json:"addrs,omitempty"`
}

// FirewallLoaded is microvm's nftables table as loaded in the kernel.
type FirewallLoaded struct {
	// Present says whether the table exists.
	Present bool `json:"present"`
	// Hash is the ruleset hash read from the marker chain ("" if none).
	Hash string `json:"hash,omitempty"`
	// ChainRules counts the rules of each chain of the table.
	ChainRules map[string]int `json:"chainRules,omitempty"`
}

// Image is one named image of the store.
type Image struct {
	// Name is the store name or the OCI reference it was pulled by.
	Name string `json:"name"`
	// ID names the tree: store/<ID>.
	ID string `json:"id"`
	// Source is where it came from (a reference with its manifest digest, or a path).
	Source string `json:"source"`
	// Size is the unpacked tree's size in bytes.
	Size int64 `json:"size"`
	// Layers are the compressed layer digests cached in blobs/ (pulls only).
	Layers []string `json:"layers,omitempty"`
	// Config is how the image runs.
	Config ImageConfig `json:"config"`
	// Imported is when the name was last set.
	Imported time.Time `json:"imported"`
	// Signers are the IDs (sha256 of the public key) of the image policy's
	// keys whose cosign signature was verified when it was pulled.
	Signers []string `json:"signers,omitempty"`
	// Trusted says it was imported with --trust: an image policy lets it
	// boot unsigned.
	Trusted bool `json:"trusted,omitempty"`
}

// ImageConfig is how an image runs: what its OCI config says.
type ImageConfig struct {
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"workingDir,omitempty"`
	User       string   `json:"user,omitempty"`
	// ExposedPorts are informational ("8080/tcp"); the VM's ports open the firewall.
	ExposedPorts []string `json:"exposedPorts,omitempty"`
	// StopSignal is sent to the workload first when the VM stops.
	StopSignal string `json:"stopSignal,omitempty"`
	// Volumes are the directories the image declares for data; one no VM
	// volume covers is reset at every boot (a warning says so).
	Volumes []string `json:"volumes,omitempty"`
}

// CheckStatus is a check's outcome.
type CheckStatus string

// The outcomes of a check.
const (
	Pass CheckStatus = "PASS"
	Fail CheckStatus = "FAIL"
	Skip CheckStatus = "SKIP"
)

// CheckResult is one check of POST /v1/host/checks (and `microvm verify`).
type CheckResult struct {
	Name     string      `json:"name"`
	Status   CheckStatus `json:"status"`
	Evidence string      `json:"evidence"`
}

// Recipients is GET /v1/host/recipients: the public side of the host's
// age identities, what a secret for this host is encrypted to (as
// `microvm secret recipient` prints them). microvm-kubelet encrypts a
// pod's registry logins to them before it puts the pod's VM.
type Recipients struct {
	Recipients []string `json:"recipients"`
}
