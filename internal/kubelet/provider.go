// Package kubelet is microvm's virtual-kubelet provider: it makes a host a
// Kubernetes node whose pods run as micro-VMs of the host's daemon, one VM
// a pod (internal/podvm maps them). The provider adds the pods' VMs to the
// host's own file and applies it through the daemon's API, reports each
// pod's status from its VM, probes the pods from the host, and serves
// kubectl logs (the VM's console), exec (over SSH) and port-forward
// through virtual-kubelet's node API. A restarted provider adopts the VMs
// it recorded; data volumes outlive their pods unless a pod asks
// otherwise.
package kubelet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/virtual-kubelet/virtual-kubelet/errdefs"

	"microvm.dev/microvm/internal/api"
	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/podvm"
	"microvm.dev/microvm/internal/supervisor"
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
	// Base is the host's own file, which the pods' VMs are added to.
	Base string
	// PodCIDR is where the pods' subnets come from, one /SubnetBits each.
	PodCIDR    netip.Prefix
	SubnetBits int
	// Poll is how often the VMs' states are read (default 2s).
	Poll time.Duration
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

	// applyMu orders applies: each sends the whole file.
	applyMu sync.Mutex

	mu     sync.Mutex
	pods   map[string]*pod // by VM name
	vms    map[string]supervisor.Status
	notify func(*corev1.Pod)
}

// pod is one pod the provider holds.
type pod struct {
	rec *podRecord
	vm  *podvm.VM // nil when refused
	// sent is the last status the provider told Kubernetes of.
	sent string
	// ready is the readiness probe's verdict (true without a probe);
	// readySince when it last turned.
	ready      bool
	readySince time.Time
	probes     context.CancelFunc
}

// New reads the host's file and the provider's records; the pods recorded
// are known again at once (adopted: no second VM is made for them).
func New(opts Options) (*Provider, error) {
	if opts.Poll <= 0 {
		opts.Poll = 2 * time.Second
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
	p := &Provider{opts: opts, base: base, records: records{opts.Records}, pods: map[string]*pod{}, vms: map[string]supervisor.Status{}}
	recs, err := p.records.load()
	if err != nil {
		return nil, err
	}
	for name, rec := range recs {
		pd := &pod{rec: rec, ready: true}
		if rec.Refusal == "" {
			vm, err := podvm.Map(rec.Pod, rec.Subnet)
			if err != nil {
				return nil, fmt.Errorf("recorded pod %s/%s: %w", rec.Pod.Namespace, rec.Pod.Name, err)
			}
			pd.vm, pd.ready = vm, vm.Readiness == nil
		}
		p.pods[name] = pd
	}
	return p, nil
}

// Adopt applies the recorded pods' VMs: VMs still running stay as they
// are (the daemon keeps a VM whose spec did not change), and any the
// daemon lost are made again. A daemon that deploys from git is refused:
// its next deploy would replace the pods' VMs with the repository's.
func (p *Provider) Adopt(ctx context.Context) error {
	err := p.opts.Daemon.DoContext(ctx, "GET", "/v1/deploy", nil, nil)
	var refused *api.StatusError
	switch {
	case err == nil:
		return errors.New("the daemon deploys from git (--git-url): on a Kubernetes node it must take its file from microvm-kubelet; start it as plain `microvm daemon`")
	case !errors.As(err, &refused): // 409: not deploying from git, as wanted
		return fmt.Errorf("the daemon: %w", err)
	}
	if err := p.apply(ctx); err != nil {
		return fmt.Errorf("adopt the recorded pods: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pd := range p.pods {
		if pd.vm != nil {
			p.startProbes(pd)
		}
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

// CreatePod makes the pod's VM. A pod that cannot run as a VM is refused:
// it fails at once with an event naming every reason, and is not retried.
func (p *Provider) CreatePod(ctx context.Context, k *corev1.Pod) error {
	name := key(k)
	p.mu.Lock()
	if old, ok := p.pods[name]; ok && old.rec.Pod.UID != k.UID {
		p.mu.Unlock()
		return fmt.Errorf("pod %s/%s: the VM of an earlier pod of that name (%s) is still being deleted", k.Namespace, k.Name, name)
	}
	subnet, err := allocate(p.opts.PodCIDR, p.opts.SubnetBits, p.usedLocked())
	if err != nil {
		p.mu.Unlock()
		return err
	}
	rec := &podRecord{Pod: k.DeepCopy(), Subnet: subnet}
	pd := &pod{rec: rec}
	vm, err := podvm.Map(k, subnet)
	var refused *podvm.Refused
	switch {
	case errors.As(err, &refused):
		rec.Refusal = err.Error()
	case err != nil:
		p.mu.Unlock()
		return err
	default:
		pd.vm, pd.ready = vm, vm.Readiness == nil
	}
	if err := p.records.save(name, rec); err != nil {
		p.mu.Unlock()
		return err
	}
	p.pods[name] = pd
	p.mu.Unlock()
	if pd.vm == nil {
		return p.refuse(name, pd)
	}
	err = p.apply(ctx)
	var problems *applyProblems
	switch {
	case errors.As(err, &problems) && problems.about(name) != "":
		rec.Refusal = "the daemon refused the pod's VM: " + problems.about(name)
		p.mu.Lock()
		pd.vm = nil
		p.mu.Unlock()
		if err := p.records.save(name, rec); err != nil {
			return err
		}
		return p.refuse(name, pd)
	case err != nil:
		// Not the pod's fault: forget it, so that virtual-kubelet's
		// retry creates it afresh.
		p.mu.Lock()
		delete(p.pods, name)
		p.mu.Unlock()
		p.records.remove(name)
		return err
	}
	p.event(k, corev1.EventTypeNormal, "Created", "micro-VM %s (%s, %s) with IP %s", name, *vm.Spec.Hypervisor, *vm.Spec.Image, subnetVMAddr(subnet))
	p.mu.Lock()
	p.startProbes(pd)
	p.mu.Unlock()
	p.push(name)
	return nil
}

// refuse tells Kubernetes the pod failed, and why.
func (p *Provider) refuse(name string, pd *pod) error {
	p.event(pd.rec.Pod, corev1.EventTypeWarning, "Unsupported", "%s", pd.rec.Refusal)
	p.opts.Log.Warn("pod refused", "pod", pd.rec.Pod.Namespace+"/"+pd.rec.Pod.Name, "reason", pd.rec.Refusal)
	p.push(name)
	return nil
}

// UpdatePod takes a changed pod: Kubernetes lets a running pod change its
// container's image (the VM restarts with it), labels and annotations.
func (p *Provider) UpdatePod(ctx context.Context, k *corev1.Pod) error {
	name := key(k)
	p.mu.Lock()
	pd, ok := p.pods[name]
	if !ok {
		p.mu.Unlock()
		return p.CreatePod(ctx, k)
	}
	pd.rec.Pod = k.DeepCopy()
	changed := false
	if pd.vm != nil {
		vm, err := podvm.Map(k, pd.rec.Subnet)
		if err != nil {
			p.mu.Unlock()
			p.event(k, corev1.EventTypeWarning, "Unsupported", "the change is not taken: %v", err)
			return nil
		}
		changed = *vm.Spec.Image != *pd.vm.Spec.Image
		pd.vm = vm
	}
	err := p.records.save(name, pd.rec)
	p.mu.Unlock()
	if err != nil || !changed {
		return err
	}
	return p.apply(ctx)
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
	delete(p.pods, name)
	if pd.probes != nil {
		pd.probes()
	}
	p.mu.Unlock()
	if pd.vm != nil {
		if err := p.apply(ctx); err != nil {
			p.mu.Lock()
			p.pods[name] = pd
			p.mu.Unlock()
			return fmt.Errorf("remove the VM of pod %s/%s: %w", k.Namespace, k.Name, err)
		}
		if pd.vm.DeleteVolumes {
			q := url.Values{"purge": {"true"}}
			if err := p.opts.Daemon.Do("DELETE", "/v1/vms/"+name+"?"+q.Encode(), nil, nil); err != nil {
				p.event(k, corev1.EventTypeWarning, "VolumesKept", "the pod's data volumes could not be deleted: %v", err)
			}
		}
	}
	if err := p.records.remove(name); err != nil {
		return err
	}
	done := pd.rec.Pod.DeepCopy()
	done.Status = *terminated(pd.rec.Pod, p.opts.NodeIP)
	p.mu.Lock()
	cb := p.notify
	p.mu.Unlock()
	if cb != nil {
		cb(done)
	}
	return nil
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

// NotifyPods registers cb for status changes and starts reading the VMs'
// states until ctx ends.
func (p *Provider) NotifyPods(ctx context.Context, cb func(*corev1.Pod)) {
	p.mu.Lock()
	p.notify = cb
	p.mu.Unlock()
	go p.watch(ctx)
}

// watch reads the VMs' states every Poll, tells Kubernetes of every pod
// whose status changed, and applies the file again when the daemon lost
// a pod's VM (a daemon restarted with another file).
func (p *Provider) watch(ctx context.Context) {
	t := time.NewTicker(p.opts.Poll)
	defer t.Stop()
	missing := map[string]int{}
	for {
		list, err := p.opts.Daemon.VMs()
		if err != nil {
			p.opts.Log.Warn("read the VMs' states", "err", err)
		} else {
			vms := map[string]supervisor.Status{}
			for _, st := range list {
				vms[st.Name] = st
			}
			p.mu.Lock()
			p.vms = vms
			lost := false
			for name, pd := range p.pods {
				if _, ok := vms[name]; !ok && pd.vm != nil {
					missing[name]++
					lost = lost || missing[name] >= 2
				} else {
					delete(missing, name)
				}
			}
			names := slices.Collect(maps.Keys(p.pods))
			p.mu.Unlock()
			for _, name := range names {
				p.push(name)
			}
			if lost {
				p.opts.Log.Warn("the daemon lost pods' VMs; applying again")
				if err := p.apply(ctx); err != nil {
					p.opts.Log.Warn("apply again", "err", err)
				}
				clear(missing)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
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

// applyProblems is the daemon's refusal of the file: nothing changed.
type applyProblems struct{ problems config.Problems }

func (e *applyProblems) Error() string { return e.join("") }

// about is the problems with the VM vm ("" for none), without the
// rendered file's lines, which mean nothing to the pod's owner.
func (e *applyProblems) about(vm string) string { return e.join("vms." + vm) }

func (e *applyProblems) join(prefix string) string {
	var parts []string
	for _, pr := range e.problems {
		if strings.HasPrefix(pr.Path, prefix) {
			parts = append(parts, strings.TrimPrefix(strings.TrimPrefix(pr.Path, prefix), ".")+": "+pr.Message)
		}
	}
	return strings.Join(parts, "; ")
}

// apply sends the host's file with every pod's VM to the daemon.
func (p *Provider) apply(ctx context.Context) error {
	p.applyMu.Lock()
	defer p.applyMu.Unlock()
	p.mu.Lock()
	specs := map[string]config.VMSpec{}
	for name, pd := range p.pods {
		if pd.vm != nil {
			specs[name] = pd.vm.Spec
		}
	}
	p.mu.Unlock()
	data, err := p.base.render(specs)
	if err != nil {
		return err
	}
	var res struct {
		Problems config.Problems `json:"problems"`
	}
	err = p.opts.Daemon.DoContext(ctx, "POST", "/v1/apply?file="+FileName, strings.NewReader(string(data)), &res)
	var se *api.StatusError
	if errors.As(err, &se) && se.Code == 422 && len(res.Problems) > 0 {
		return &applyProblems{res.Problems}
	}
	if err != nil {
		return fmt.Errorf("apply the pods' VMs: %w", err)
	}
	return nil
}

// event records an event on the pod.
func (p *Provider) event(k *corev1.Pod, typ, reason, format string, args ...any) {
	if p.opts.Recorder != nil {
		p.opts.Recorder.Eventf(k, typ, reason, format, args...)
	}
}

// subnetVMAddr is the VM's address in its subnet (the second).
func subnetVMAddr(s netip.Prefix) netip.Addr { return s.Addr().Next().Next() }
