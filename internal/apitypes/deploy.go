package apitypes

import "time"

// DeployStatus answers GET /v1/deploy: the GitOps loop's state.
type DeployStatus struct {
	Branch string `json:"branch"`
	Path   string `json:"path"`
	// Current is the generation the fleet runs: the last good one.
	Current    *Generation `json:"current,omitempty"`
	LastGood   *Generation `json:"lastGood,omitempty"`
	Last       *Generation `json:"lastAttempt,omitempty"`
	RemoteHead string      `json:"remoteHead,omitempty"`
	LastFetch  time.Time   `json:"lastFetch,omitzero"`
	FetchErr   string      `json:"fetchError,omitempty"`
	NextPoll   time.Time   `json:"nextPoll,omitzero"`
	Suspended  bool        `json:"suspended"`
}

// GenerationStatus is where a generation's deploy got to.
type GenerationStatus string

// The statuses of a generation.
const (
	// Applying: the host is being changed to this generation (a daemon that
	// finds it at start completes the deploy or rolls it back).
	Applying GenerationStatus = "applying"
	// Succeeded: applied and healthy; the fleet runs it.
	Succeeded GenerationStatus = "succeeded"
	// GenerationFailed: refused before anything changed (invalid file, bad
	// signature), or failed with no earlier generation to go back to.
	GenerationFailed GenerationStatus = "failed"
	// RolledBack: applied, found unhealthy, and the last good generation
	// was put back.
	RolledBack GenerationStatus = "rolled-back"
)

// Generation is one deploy attempt (GET /v1/deploy/history lists them,
// newest first; POST /v1/deploy/rollback answers the one it made). It is
// also the generation's record on disk.
type Generation struct {
	Number int    `json:"number"`
	Commit Commit `json:"commit"`
	// Ref is the branch the commit came from.
	Ref string `json:"ref"`
	// Signer is who signed the commit, when signatures are required.
	Signer string           `json:"signer,omitempty"`
	Status GenerationStatus `json:"status"`
	Error  string           `json:"error,omitempty"`
	// Manual marks a generation made by `microvm deploy rollback`.
	Manual bool `json:"manual,omitempty"`
	// RolledBackTo is the generation put back after this one failed.
	RolledBackTo int       `json:"rolledBackTo,omitempty"`
	Started      time.Time `json:"started"`
	Finished     time.Time `json:"finished,omitzero"`
	// Path and Config are the config file's path in the repository and
	// its content at the commit.
	Path   string `json:"path"`
	Config string `json:"config"`
	// VMs counts the VMs of this host in the generation and those running
	// when it finished.
	VMsTotal  int `json:"vmsTotal"`
	VMsActive int `json:"vmsActive"`
	// Images maps each VM of the generation whose image came from a
	// registry to the digest it ran (repo@sha256:…), recorded when the
	// generation succeeded; a rollback to it boots those digests.
	Images map[string]string `json:"images,omitempty"`
	// Moved maps each VM whose image tag, written the same as in the
	// good generation before, named another digest this time to the
	// digest it ran then: a change nobody made in git.
	Moved map[string]string `json:"moved,omitempty"`
}

// Commit is a commit of the repository the fleet is deployed from.
type Commit struct {
	Hash    string    `json:"hash"`
	Message string    `json:"message"`
	Author  string    `json:"author"`
	Time    time.Time `json:"time"`
	// Signed says whether the commit carries a signature (checked or not).
	Signed bool `json:"signed"`
}

// TriggerResponse answers POST /v1/deploy/trigger.
type TriggerResponse struct {
	Triggered bool `json:"triggered"`
}

// SuspendResponse answers POST /v1/deploy/suspend and /resume.
type SuspendResponse struct {
	Suspended bool `json:"suspended"`
}
