// Package kubelet is microvm's virtual-kubelet provider: it makes a host a
// Kubernetes node whose pods run as micro-VMs of the host's daemon, one VM
// a pod (internal/podvm maps them). The provider applies the host's own
// file, puts each pod's VM through the daemon's per-VM API on its own (one
// pod's boot or failure never waits for or fails another's), follows the
// VMs' states on the daemon's event stream, restarts a pod's VM as its
// restart policy says and keeps a finished pod finished, probes the pods
// from the host, and serves kubectl logs (the VM's console), exec (over
// SSH) and port-forward through virtual-kubelet's node API. A restarted
// provider adopts the VMs it recorded; data volumes outlive their pods
// unless a pod asks otherwise.
package kubelet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/virtual-kubelet/virtual-kubelet/errdefs"

	"microvm.dev/microvm/internal/api"
	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/podvm"
)

// FileName is the name the provider applies the daemon's file under.
const FileName = "kubernetes.yaml"

// Options configure a Provider.
type Options struct {
	// Node is the node's name.
	Node string
	// NodeIP is the node's address, the pods' host IP.
	NodeIP netip.Addr
	// Daemon is the host's daemon.
	Daemon *api.Client
	// StateDir is the daemon's state directory (microvm's SSH key and the
	// VMs' host keys, for exec and exec probes).
	StateDir string
	// NetNS is the network namespace the VMs are reached from ("" = this
	// process's).
	NetNS string
	// Records is the directory the provider keeps its pods in.
	Records string
	// Base is the host's own file (its host settings, defaults and VMs of
	// its own), applied as the daemon's file; the pods' VMs are put beside
	// it.
	Base string
	// PodCIDR is where the pods' subnets come from, one /SubnetBits each.
	PodCIDR    netip.Prefix
	SubnetBits int
	// Poll is how often the VMs' states are read while the daemon's event
	// stream is down (default 2s).
	Poll time.Duration
	// Backoff is the first wait before a pod's VM that failed to start or
	// stopped is started again; it doubles up to MaxBackoff (defaults 10s
	// and 5m, a kubelet's).
	Backoff, MaxBackoff time.Duration
	// Secrets reads a pod's imagePullSecrets (nil: they are not used).
	Secrets SecretGetter
	// Recorder records the provider's events on pods.
	Recorder record.EventRecorder
	// Log is the provider's log.
	Log *slog.Logger
}

// Provider is the virtual-kubelet provider over one daemon.
type Provider struct {
	opts    Options
	base    *baseFile
	records records

	mu     sync.Mutex
	pods   map[string]*pod // by VM name
	vms    map[string]apitypes.VMStatus
	listed bool // vms holds a list from the daemon
	notify func(*corev1.Pod)
}

// pod is one pod the provider holds.
type pod struct {
	rec *podRecord
	vm  *podvm.VM // nil when refused
	// entry is the VM's entry as put to the daemon (YAML).
	entry []byte
	sync  podSync
	// sent is the last status the provider told Kubernetes of.
	sent string
	// ready is the readiness probe's verdict (true without a probe);
	// readySince when it last turned.
	ready      bool
	readySince time.Time
	probes     context.CancelFunc
	// launchErr is why the last try to start the VM failed ("" when it
	// did not).
	launchErr string
	// daemonRestarts is the daemon's count of the VM's restarts last seen.
	daemonRestarts int
}

// New reads the host's file and the provider's records; the pods recorded
// are known again at once (adopted: no second VM is made for them).
func New(opts Options) (*Provider, error) {
	if opts.Poll <= 0 {
		opts.Poll = 2 * time.Second
	}
	if opts.Backoff <= 0 {
		opts.Backoff = 10 * time.Second
	}
	if opts.MaxBackoff < opts.Backoff {
		opts.MaxBackoff = max(opts.Backoff, 5*time.Minute)
	}
	if opts.SubnetBits == 0 {
		opts.SubnetBits = 29
	}
	if opts.SubnetBits < opts.PodCIDR.Bits() || opts.SubnetBits > 30 {
		return nil, fmt.Errorf("pod subnets of /%d do not fit the pod CIDR %s (want /%d to /30)", opts.SubnetBits, opts.PodCIDR, opts.PodCIDR.Bits())
	}
	if !opts.PodCIDR.Addr().Is4() {
		return nil, fmt.Errorf("the pod CIDR %s is not IPv4 (the pods' IPv6 networks are derived from their IPv4 ones)", opts.PodCIDR)
	}
	base, err := readBase(opts.Base)
	if err != nil {
		return nil, err
	}
	for _, s := range base.subnets() {
		if s.Overlaps(opts.PodCIDR) {
			return nil, fmt.Errorf("the pod CIDR %s overlaps a VM subnet of the host's file (%s)", opts.PodCIDR, s)
		}
	}
	p := &Provider{opts: opts, base: base, records: records{opts.Records}, pods: map[string]*pod{}, vms: map[string]apitypes.VMStatus{}}
	recs, err := p.records.load()
	if err != nil {
		return nil, err
	}
	for name, rec := range recs {
		pd := &pod{rec: rec, ready: true}
		if rec.Refusal == "" {
			if err := pd.mapVM(rec.Pod); err != nil {
				return nil, fmt.Errorf("recorded pod %s/%s: %w", rec.Pod.Namespace, rec.Pod.Name, err)
			}
		}
		p.pods[name] = pd
	}
	return p, nil
}

// mapVM makes k the pod's VM (on its subnet), with the logins of its
// pull secrets once they are read.
func (pd *pod) mapVM(k *corev1.Pod) error {
	vm, err := podvm.Map(k, pd.rec.Subnet)
	if err != nil {
		return err
	}
	vm.Spec.Registries = pd.rec.Logins
	entry, err := vmEntry(vm.Spec)
	if err != nil {
		return err
	}
	if pd.vm == nil {
		pd.ready = vm.Readiness == nil
	}
	pd.vm, pd.entry = vm, entry
	return nil
}

// Adopt applies the host's file and puts the recorded pods' VMs again:
// VMs still running stay as they are (the daemon keeps a VM whose entry
// did not change), any the daemon lost are made again, and a pod whose VM
// ended while no provider watched is finished as its restart policy says.
// A daemon that deploys from git is refused: its next deploy would replace
// the host's file with the repository's.
func (p *Provider) Adopt(ctx context.Context) error {
	err := p.opts.Daemon.DoContext(ctx, "GET", "/v1/deploy", nil, nil)
	var refused *api.StatusError
	switch {
	case err == nil:
		return errors.New("the daemon deploys from git (--git-url): on a Kubernetes node it must take its file from microvm-kubelet; start it as plain `microvm daemon`")
	case !errors.As(err, &refused): // 409: not deploying from git, as wanted
		return fmt.Errorf("the daemon: %w", err)
	}
	if err := p.applyBase(ctx); err != nil {
		return err
	}
	list, err := p.opts.Daemon.VMs()
	if err != nil {
		return fmt.Errorf("adopt the recorded pods: %w", err)
	}
	p.observe(list)
	p.mu.Lock()
	defer p.mu.Unlock()
	for name, pd := range p.pods {
		if pd.vm != nil && pd.rec.Finished == nil {
			p.startProbes(pd)
			p.kickLocked(name, pd)
		}
	}
	return nil
}

// applyBase applies the host's own file as the daemon's file.
func (p *Provider) applyBase(ctx context.Context) error {
	var res struct {
		Problems config.Problems `json:"problems"`
	}
	err := p.opts.Daemon.DoContext(ctx, "POST", "/v1/apply?file="+url.QueryEscape(p.opts.Base), bytes.NewReader(p.base.data), &res)
	if err != nil && len(res.Problems) > 0 {
		return fmt.Errorf("the daemon refused the host's file: %w", res.Problems)
	}
	if err != nil {
		return fmt.Errorf("apply the host's file: %w", err)
	}
	return nil
}

// count is how many pods the provider holds.
func (p *Provider) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pods)
}

func key(pd *corev1.Pod) string { return podvm.Name(pd.Namespace, pd.Name) }

// CreatePod records the pod and starts putting its VM, returning at once:
// the VM's boot, and any failure of it, is the pod's status. A pod that
// cannot run as a VM is refused: it fails at once with an event naming
// every reason, and is not retried.
func (p *Provider) CreatePod(_ context.Context, k *corev1.Pod) error {
	name := key(k)
	p.mu.Lock()
	defer p.mu.Unlock()
	if old, ok := p.pods[name]; ok {
		if old.rec.Pod.UID != k.UID {
			return fmt.Errorf("pod %s/%s: the VM of an earlier pod of that name (%s) is still being deleted", k.Namespace, k.Name, name)
		}
		return nil // created already
	}
	subnet, err := allocate(p.opts.PodCIDR, p.opts.SubnetBits, p.usedLocked())
	if err != nil {
		return err
	}
	pd := &pod{rec: &podRecord{Pod: k.DeepCopy(), Subnet: subnet}}
	err = pd.mapVM(k)
	if _, ok := errors.AsType[*podvm.Refused](err); ok {
		pd.rec.Refusal = err.Error()
	} else if err != nil {
		return err
	}
	if err := p.records.save(name, pd.rec); err != nil {
		return err
	}
	p.pods[name] = pd
	if pd.vm == nil {
		p.refuseLocked(pd)
		return nil
	}
	p.startProbes(pd)
	p.kickLocked(name, pd)
	return nil
}

// refuseLocked tells Kubernetes the pod failed, and why (p.mu held).
func (p *Provider) refuseLocked(pd *pod) {
	p.event(pd.rec.Pod, corev1.EventTypeWarning, "Unsupported", "%s", pd.rec.Refusal)
	p.opts.Log.Warn("pod refused", "pod", pd.rec.Pod.Namespace+"/"+pd.rec.Pod.Name, "reason", pd.rec.Refusal)
	go p.push(key(pd.rec.Pod))
}

// UpdatePod takes a changed pod: Kubernetes lets a running pod change its
// container's image (the VM restarts with it), labels and annotations. A
// finished pod stays finished.
func (p *Provider) UpdatePod(ctx context.Context, k *corev1.Pod) error {
	name := key(k)
	p.mu.Lock()
	pd, ok := p.pods[name]
	if !ok {
		p.mu.Unlock()
		return p.CreatePod(ctx, k)
	}
	defer p.mu.Unlock()
	pd.rec.Pod = k.DeepCopy()
	if pd.vm != nil {
		was := pd.entry
		if err := pd.mapVM(k); err != nil {
			p.event(k, corev1.EventTypeWarning, "Unsupported", "the change is not taken: %v", err)
			return nil
		}
		if !bytes.Equal(was, pd.entry) && pd.rec.Finished == nil {
			p.kickLocked(name, pd)
		}
	}
	return p.records.save(name, pd.rec)
}

// DeletePod stops and removes the pod's VM, and its data volumes when
// the pod's volume policy is delete.
func (p *Provider) DeletePod(ctx context.Context, k *corev1.Pod) error {
	name := key(k)
	p.mu.Lock()
	pd, ok := p.pods[name]
	if !ok {
		p.mu.Unlock()
		return errdefs.NotFoundf("pod %s/%s is not on this node", k.Namespace, k.Name)
	}
	pd.sync.deleted = true
	if pd.probes != nil {
		pd.probes()
		pd.probes = nil
	}
	p.mu.Unlock()
	if pd.vm != nil {
		if err := p.removeVM(ctx, name, pd); err != nil {
			p.mu.Lock()
			pd.sync.deleted = false
			p.mu.Unlock()
			return fmt.Errorf("remove the VM of pod %s/%s: %w", k.Namespace, k.Name, err)
		}
	}
	if err := p.records.remove(name); err != nil {
		return err
	}
	p.mu.Lock()
	delete(p.pods, name)
	cb := p.notify
	p.mu.Unlock()
	done := pd.rec.Pod.DeepCopy()
	done.Status = *terminated(pd.rec.Pod, p.opts.NodeIP)
	if cb != nil {
		cb(done)
	}
	return nil
}

// removeVM removes the pod's VM from the daemon, its data volumes too
// when the pod says so.
func (p *Provider) removeVM(ctx context.Context, name string, pd *pod) error {
	q := url.Values{"purge": {strconv.FormatBool(pd.vm.DeleteVolumes)}}
	return p.opts.Daemon.DoContext(ctx, "DELETE", "/v1/vms/"+name+"?"+q.Encode(), nil, nil)
}

// GetPod returns the pod with its status, if it is on this node.
func (p *Provider) GetPod(_ context.Context, namespace, name string) (*corev1.Pod, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pd, ok := p.pods[podvm.Name(namespace, name)]
	if !ok || pd.rec.Pod.Name != name || pd.rec.Pod.Namespace != namespace {
		return nil, errdefs.NotFoundf("pod %s/%s is not on this node", namespace, name)
	}
	return p.withStatusLocked(pd), nil
}

// GetPodStatus returns the pod's status.
func (p *Provider) GetPodStatus(ctx context.Context, namespace, name string) (*corev1.PodStatus, error) {
	k, err := p.GetPod(ctx, namespace, name)
	if err != nil {
		return nil, err
	}
	return &k.Status, nil
}

// GetPods returns every pod on this node.
func (p *Provider) GetPods(context.Context) ([]*corev1.Pod, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*corev1.Pod, 0, len(p.pods))
	for _, pd := range p.pods {
		out = append(out, p.withStatusLocked(pd))
	}
	return out, nil
}

// NotifyPods registers cb for status changes and starts following the
// VMs' states until ctx ends.
func (p *Provider) NotifyPods(ctx context.Context, cb func(*corev1.Pod)) {
	p.mu.Lock()
	p.notify = cb
	p.mu.Unlock()
	go p.watch(ctx)
}

// push tells Kubernetes of the pod's status if it changed.
func (p *Provider) push(name string) {
	p.mu.Lock()
	pd, ok := p.pods[name]
	if !ok || p.notify == nil {
		p.mu.Unlock()
		return
	}
	k := p.withStatusLocked(pd)
	sum := statusKey(&k.Status)
	if sum == pd.sent {
		p.mu.Unlock()
		return
	}
	pd.sent = sum
	cb := p.notify
	p.mu.Unlock()
	cb(k)
}

// withStatusLocked is a copy of the pod with its status now.
func (p *Provider) withStatusLocked(pd *pod) *corev1.Pod {
	k := pd.rec.Pod.DeepCopy()
	st, known := p.vms[key(k)]
	k.Status = *podStatus(pd, st, known, p.opts.NodeIP)
	return k
}

// usedLocked is every subnet taken: the host's VMs' and the pods'.
func (p *Provider) usedLocked() []netip.Prefix {
	used := p.base.subnets()
	for _, pd := range p.pods {
		used = append(used, pd.rec.Subnet)
	}
	return used
}

// event records an event on the pod.
func (p *Provider) event(k *corev1.Pod, typ, reason, format string, args ...any) {
	if p.opts.Recorder != nil {
		p.opts.Recorder.Eventf(k, typ, reason, format, args...)
	}
}

// subnetVMAddr is the VM's address in its subnet (the second).
func subnetVMAddr(s netip.Prefix) netip.Addr { return s.Addr().Next().Next() }
