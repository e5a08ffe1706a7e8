package apitypes

import (
	"time"

	"microvm.dev/microvm/internal/config"
)

// The actions a VMAction reports: the plan's actions, done.
const (
	ActionCreated   = "created"
	ActionStarted   = "started"
	ActionRestarted = "restarted"
	ActionRemoved   = "removed"
	ActionDefined   = "defined"
	ActionUnchanged = "unchanged"
)

// VMAction is what an apply (or a put) did to one VM.
type VMAction struct {
	Name string `json:"name"`
	// Action is the plan's action done: one of the Action constants.
	Action string `json:"action"`
	Error  string `json:"error,omitempty"`
	// StopSeconds is how long the old VM took to shut down (restarted, removed).
	StopSeconds float64 `json:"stopSeconds,omitempty"`
	// PrepareSeconds is how long the start took before the hypervisor ran.
	PrepareSeconds float64 `json:"prepareSeconds,omitempty"`
	// Steps are the launch's steps, each timed (started VMs).
	Steps []StepTiming `json:"steps,omitempty"`
	// BootSeconds is how long the VM took to become ready.
	BootSeconds float64 `json:"bootSeconds,omitempty"`
	// Done are the host operations done for the VM, in the plan's terms
	// (the ops of `microvm plan`): what the apply found it had to do and
	// did, in order.
	Done []HostStep `json:"done,omitempty"`
}

// HostStep is one host operation done for a VM: an op of the plan
// (create-bridge, ensure-volume, start, …) and what it acted on.
type HostStep struct {
	Op     string `json:"op"`
	Detail string `json:"detail"`
}

// Started says whether the change booted the VM (created, started or
// restarted it).
func (a VMAction) Started() bool {
	return a.Action == ActionCreated || a.Action == ActionStarted || a.Action == ActionRestarted
}

// Phases splits an apply's wall time, in seconds.
type Phases struct {
	// Parse is reading and validating the file (ApplyFile only).
	Parse float64 `json:"parse"`
	// Stop is stopping removed and changed VMs (their clean shutdowns).
	Stop float64 `json:"stop"`
	// Network is reconciling bridges, TAPs and the firewall.
	Network float64 `json:"network"`
	// Start is starting new and changed VMs until all are ready.
	Start float64 `json:"start"`
}

// ApplyResult answers POST /v1/apply: what the apply of a whole file did.
// With problems (422) nothing was changed; with an error (500) it is the
// body's error beside what was done.
type ApplyResult struct {
	File     string          `json:"file"`
	Problems config.Problems `json:"problems,omitempty"`
	VMs      []VMAction      `json:"vms"`
	Network  *NetworkResult  `json:"network,omitempty"`
	Seconds  float64         `json:"seconds"`
	Phases   Phases          `json:"phases"`
	// Warnings are problems that did not fail the apply.
	Warnings []string `json:"warnings,omitempty"`
}

// ApplyFailure is the body of an apply that failed after its file was
// checked (500): what was done, and the error.
type ApplyFailure struct {
	*ApplyResult
	Error string `json:"error"`
}

// PutResult is what putting one VM (PUT /v1/vms/{name}) did.
type PutResult struct {
	// File names what the VM was checked against (its problems' file).
	File string `json:"file"`
	// Problems are why the VM's entry was refused; nothing changed.
	Problems config.Problems `json:"problems,omitempty"`
	// VM is the plan's action done, and its timings up to the
	// hypervisor's start.
	VM      VMAction       `json:"vm"`
	Network *NetworkResult `json:"network,omitempty"`
	// Warnings are problems that did not fail the change.
	Warnings []string `json:"warnings,omitempty"`
}

// PutResponse answers PUT /v1/vms/{name}: what was done, the VM's status
// after it (its hypervisor started, its readiness still to come), and the
// error of a change that failed after it was checked.
type PutResponse struct {
	*PutResult
	Status *VMStatus `json:"status,omitempty"`
	Error  string    `json:"error,omitempty"`
}

// NetworkResult is what a reconcile of the host's network did.
type NetworkResult struct {
	// Uplink is the resolved NAT uplink ("" when none could be found).
	Uplink string `json:"uplink,omitempty"`
	// Firewall says whether the nftables table was (re)loaded or removed.
	Firewall bool `json:"firewall"`
	// Hash is the ruleset hash now loaded.
	Hash string `json:"hash,omitempty"`
	// Links lists the interface operations performed.
	Links []LinkChange `json:"links"`
	// Warnings are things the operator should know but that did not stop the apply.
	Warnings []string `json:"warnings,omitempty"`
}

// Changed reports whether anything on the host was changed.
func (r *NetworkResult) Changed() bool { return r.Firewall || len(r.Links) > 0 }

// LinkChange is one operation a network reconcile performed.
type LinkChange struct {
	Op     string `json:"op"`
	Target string `json:"target"`
}

func (c LinkChange) String() string { return c.Op + " " + c.Target }

// StopResult is one VM of POST /v1/stop: how its shutdown (or save) went.
type StopResult struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
	// Saved says its state was saved; Fallback says why a VM that was to
	// be saved was shut down instead.
	Saved    bool   `json:"saved,omitempty"`
	Fallback string `json:"fallback,omitempty"`
	Error    string `json:"error,omitempty"`
}

// Snapshot is one copy of a volume (GET and POST /v1/vms/{name}/snapshots).
type Snapshot struct {
	// Name is "<volume>@<time>", what restore takes.
	Name   string    `json:"name"`
	Volume string    `json:"volume"`
	Time   time.Time `json:"time"`
	Size   int64     `json:"size"`
	// Method is how it was made: reflink or sparse copy ("" when listed).
	Method string `json:"method,omitempty"`
	// Backup is the restic snapshot it was sent to off the host, when the
	// VM's snapshots.backup asks for one; BackupError why that failed
	// (the snapshot itself is kept either way).
	Backup      string `json:"backup,omitempty"`
	BackupError string `json:"backupError,omitempty"`
}

// Backup is a volume snapshot kept off the host, in a restic repository:
// GET /v1/vms/{name}/backups.
type Backup struct {
	// ID is restic's snapshot ID (the short form restic prints).
	ID string `json:"id"`
	// VM, Volume and Snapshot say what it holds: Snapshot is the name of
	// the volume snapshot it was sent from ("<volume>@<time>"), what
	// `volume restore --from backup` takes.
	VM       string    `json:"vm"`
	Volume   string    `json:"volume"`
	Snapshot string    `json:"snapshot"`
	Time     time.Time `json:"time"`
	// Size is the volume image's size (its holes included); 0 when listed.
	Size int64 `json:"size,omitempty"`
	// Host is the host that sent it.
	Host string `json:"host"`
}

// MoveResult is POST /v1/vms/{name}/move: a VM moved to another host.
type MoveResult struct {
	VM   string `json:"vm"`
	From string `json:"from"`
	To   string `json:"to"`
	// Mode is how it moved: "saved" (its state saved here, resumed
	// there: its processes run on) or "cold" (shut down cleanly, booted
	// there).
	Mode string `json:"mode"`
	// Fallback says why a running VM moved cold: its state could not be
	// saved (its hypervisor or store cannot).
	Fallback string `json:"fallback,omitempty"`
	// Boot is how it came up there ("resumed from …", or a cold boot
	// and why its saved state was dropped).
	Boot string `json:"boot,omitempty"`
	// Files are what was sent, each checked by its digest there.
	Files []MovedFile `json:"files"`
	// Seconds is the whole move; Downtime from the VM's stop here until
	// it ran there.
	Seconds  float64 `json:"seconds"`
	Downtime float64 `json:"downtime"`
}

// MovedFile is one file of a move: its size (holes included), the bytes
// of it sent (its allocated ranges) and on the wire (compressed), and the
// digest both hosts computed.
type MovedFile struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	Data   int64  `json:"data"`
	Wire   int64  `json:"wire"`
	SHA256 string `json:"sha256"`
	// Cached says the other host had these bytes from an earlier move and
	// linked them: nothing was sent (Wire 0).
	Cached bool `json:"cached,omitempty"`
}

// PeerCached is POST /peer/v1/incoming/{vm}/{file}/cached: the file is
// the one with this digest (transfer.Stats.SHA256) that the receiver kept
// from an earlier move, if it has it (else 404, and the file is sent).
type PeerCached struct {
	SHA256 string `json:"sha256"`
}

// PeerHello is GET /peer/v1/hello on another host's peer listener: who it
// is and the room its state directory has.
type PeerHello struct {
	Host      string `json:"host"`
	FreeBytes int64  `json:"freeBytes"`
	// SSHKey is the host's microvm SSH client key: a guest that moves to
	// it running (saved or live) lets it in first.
	SSHKey string `json:"sshKey,omitempty"`
}

// PeerCommit is POST /peer/v1/incoming/{vm}/commit: the moved VM's entry
// (as PUT /v1/vms/{name} takes it, when the receiving host's file does not
// name the VM) and the host it comes from.
type PeerCommit struct {
	From  string `json:"from"`
	Entry string `json:"entry"`
	// Volumes are the empty volumes to make, by name and size, for a
	// live move, which copies their data while the guest runs.
	Volumes map[string]int64 `json:"volumes,omitempty"`
}

// PeerVM is GET /peer/v1/vms/{vm} on another host: whether it has the VM,
// its state, and whether a move of it (in or out) is under way there.
type PeerVM struct {
	Known  bool  `json:"known"`
	State  State `json:"state,omitempty"`
	Moving bool  `json:"moving,omitempty"`
	// Waiting says its hypervisor waits for a live move's guest there:
	// the sender's may begin.
	Waiting bool `json:"waiting,omitempty"`
}

// DrainResult is POST /v1/drain: the VMs moved away, and those that could
// not be, with why (they stay where they were).
type DrainResult struct {
	Moved  []MoveResult      `json:"moved"`
	Failed map[string]string `json:"failed"`
}

// CloneRequest asks POST /v1/vms/{template}/clone for clones of the
// template, one per name.
type CloneRequest struct {
	Names []string `json:"names"`
}

// CloneResult answers it: the clones put together (checked as one, the
// network reconciled once, their hypervisors started at once), each with
// the index it was given; their readiness comes in their status.
type CloneResult struct {
	// File names what the clones were checked against.
	File string `json:"file"`
	// Problems are why they were refused; nothing changed.
	Problems config.Problems `json:"problems,omitempty"`
	// VMs are the plan's action done for each, by name.
	VMs     []VMAction     `json:"vms"`
	Network *NetworkResult `json:"network,omitempty"`
	// Warnings are problems that did not fail the change.
	Warnings []string `json:"warnings,omitempty"`
}
