package kubelet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"

	"microvm.dev/microvm/internal/api"
	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/plan"
)

// podSync is where putting one pod's VM to the daemon stands.
type podSync struct {
	// busy says a goroutine is putting the VM (it looks again after each
	// put, so a change meanwhile is not lost).
	busy bool
	// deleted says the pod is being deleted: nothing is put any more.
	deleted bool
	// put is the entry last sent; hash the spec hash the daemon made of
	// it ("" before the first put): a state of the VM with another spec
	// (one being replaced) is not the pod's VM ending.
	put  []byte
	hash string
	// retryAt is when the VM, which failed to start or stopped, is put
	// again (zero: no try is due); backoff the wait before the next one.
	retryAt time.Time
	backoff time.Duration
}

// kickLocked starts putting the pod's VM if a put is due (p.mu held).
func (p *Provider) kickLocked(name string, pd *pod) {
	if pd.sync.busy {
		return
	}
	pd.sync.busy = true
	go p.syncPod(name, pd)
}

// syncPod puts the pod's VM while a put is due: the pod's own goroutine,
// so one pod's boot never waits for another's.
func (p *Provider) syncPod(name string, pd *pod) {
	for {
		p.mu.Lock()
		if !p.dueLocked(name, pd, time.Now()) {
			pd.sync.busy = false
			p.mu.Unlock()
			return
		}
		if !pd.rec.LoginsRead && len(pd.rec.Pod.Spec.ImagePullSecrets) > 0 {
			k := pd.rec.Pod
			p.mu.Unlock()
			p.readLogins(name, pd, k)
			continue
		}
		entry := pd.entry
		p.mu.Unlock()
		var res apitypes.PutResponse
		err := p.opts.Daemon.DoContext(context.Background(), "PUT", "/v1/vms/"+name, bytes.NewReader(entry), &res)
		p.mu.Lock()
		deleted := pd.sync.deleted
		if !deleted {
			p.tookLocked(name, pd, entry, &res, err)
		}
		p.mu.Unlock()
		if deleted {
			// The pod went while its VM was being put: the put may have
			// come after the deletion's removal, so remove it again.
			if err := p.removeVM(context.Background(), name, pd); err != nil {
				p.opts.Log.Warn("remove the VM of a deleted pod", "vm", name, "err", err)
			}
			p.mu.Lock()
			pd.sync.busy = false
			p.mu.Unlock()
			return
		}
		p.push(name)
	}
}

// readLogins reads the pod's pull secrets into its record and entry,
// once: a warning event for each that could not be used.
func (p *Provider) readLogins(name string, pd *pod, k *corev1.Pod) {
	logins, warnings := p.pullLogins(context.Background(), k)
	for _, w := range warnings {
		p.event(k, corev1.EventTypeWarning, "FailedToRetrieveImagePullSecret", "%s; the image is pulled without it", w)
		p.opts.Log.Warn("pull secret", "pod", k.Namespace+"/"+k.Name, "err", w)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	pd.rec.Logins, pd.rec.LoginsRead = logins, true
	if pd.vm != nil {
		if err := pd.mapVM(pd.rec.Pod); err != nil {
			p.opts.Log.Warn("map the pod's VM with its logins", "vm", name, "err", err)
		}
	}
	p.saveLocked(name, pd)
}

// dueLocked says whether the pod's VM is to be put now: its entry is new
// or changed, a retry is due, or the daemon lost the VM.
func (p *Provider) dueLocked(name string, pd *pod, now time.Time) bool {
	switch {
	case pd.vm == nil || pd.rec.Finished != nil || pd.sync.deleted:
		return false
	case !bytes.Equal(pd.sync.put, pd.entry):
		return true
	case !pd.sync.retryAt.IsZero():
		return !now.Before(pd.sync.retryAt)
	}
	_, known := p.vms[name]
	return p.listed && !known
}

// tookLocked records the outcome of putting entry: the
// VM's status, or the refusal that fails the pod, or the launch error
// that is the pod's waiting reason until the next try.
func (p *Provider) tookLocked(name string, pd *pod, entry []byte, res *apitypes.PutResponse, err error) {
	pd.sync.put = entry
	k := pd.rec.Pod
	if se, ok := errors.AsType[*api.StatusError](err); ok && se.Code == 422 && res.PutResult != nil && len(res.Problems) > 0 {
		var why []string
		for _, pr := range res.Problems {
			why = append(why, strings.TrimPrefix(strings.TrimPrefix(pr.Path, "vms."+name), ".")+": "+pr.Message)
		}
		pd.rec.Refusal = "the daemon refused the pod's VM: " + strings.Join(why, "; ")
		pd.vm = nil
		p.saveLocked(name, pd)
		if pd.probes != nil {
			pd.probes()
			pd.probes = nil
		}
		p.refuseLocked(pd)
		return
	}
	if err != nil {
		// The daemon's answer is the pod's reason; a daemon that could not
		// be asked (restarting, a request cut short) leaves the pod the
		// reason it had, as a kubelet does while its runtime is away.
		if _, answered := errors.AsType[*api.StatusError](err); answered || pd.launchErr == "" {
			pd.launchErr = err.Error()
		}
		wait := p.backoffLocked(pd)
		p.event(k, corev1.EventTypeWarning, "Failed", "the micro-VM could not be started: %v; next try in %s", err, wait)
		p.opts.Log.Warn("start a pod's VM", "vm", name, "err", err, "retry", wait)
		return
	}
	ran := pd.launchErr == "" // the VM's last launch got it running
	pd.launchErr, pd.sync.retryAt = "", time.Time{}
	if res.Status != nil {
		p.vms[name], pd.sync.hash = *res.Status, res.Status.SpecHash
	}
	switch {
	case res.PutResult == nil || !res.VM.Started():
	case res.VM.Action != plan.Create.Past():
		// A VM that ran started again (after it ended, or with a new
		// image): a restart of the pod's container.
		if ran {
			pd.rec.Restarts++
			p.saveLocked(name, pd)
		}
		p.event(k, corev1.EventTypeNormal, "Started", "micro-VM %s %s", name, res.VM.Action)
	default:
		p.event(k, corev1.EventTypeNormal, "Created", "micro-VM %s (%s, %s) with IP %s", name, *pd.vm.Spec.Hypervisor, *pd.vm.Spec.Image, subnetVMAddr(pd.rec.Subnet))
	}
}

// backoffLocked schedules the pod's next try and returns the wait: the
// first Backoff, doubled each time up to MaxBackoff.
func (p *Provider) backoffLocked(pd *pod) time.Duration {
	wait := max(pd.sync.backoff, p.opts.Backoff)
	pd.sync.retryAt = time.Now().Add(wait)
	pd.sync.backoff = min(2*wait, p.opts.MaxBackoff)
	return wait
}

// observe takes the daemon's list of VMs: each pod's VM that ended is
// finished (kept so from now on) or scheduled to start again, as its
// restart policy says; a VM that ran well long enough forgets its
// back-off; every pod whose status changed is told of.
func (p *Provider) observe(list []apitypes.VMStatus) {
	vms := make(map[string]apitypes.VMStatus, len(list))
	for _, st := range list {
		vms[st.Name] = st
	}
	now := time.Now()
	p.mu.Lock()
	p.vms, p.listed = vms, true
	var names []string
	for name, pd := range p.pods {
		names = append(names, name)
		st, known := vms[name]
		if known && st.Restarts < pd.daemonRestarts {
			// The daemon's count started over (it restarted): keep the
			// restarts it counted before.
			pd.rec.Restarts += int32(pd.daemonRestarts)
			p.saveLocked(name, pd)
		}
		if known {
			pd.daemonRestarts = st.Restarts
		}
		switch {
		case pd.vm == nil || pd.rec.Finished != nil || pd.sync.deleted:
		case !known:
			if pd.sync.put != nil {
				p.kickLocked(name, pd) // lost by the daemon
			}
		case st.State == apitypes.Running && now.Sub(st.StartedAt) > 2*p.opts.MaxBackoff:
			pd.sync.backoff = 0
		case (st.State == apitypes.Stopped || st.State == apitypes.Failed) && pd.launchErr == "" && !pd.sync.busy && (pd.sync.hash == "" || st.SpecHash == pd.sync.hash):
			p.endedLocked(name, pd, st)
		}
	}
	p.mu.Unlock()
	for _, name := range names {
		p.push(name)
	}
}

// endedLocked takes a pod's VM that stopped or failed: the pod finishes
// as its restart policy says, or its VM is started again after a back-off.
func (p *Provider) endedLocked(name string, pd *pod, st apitypes.VMStatus) {
	k := pd.rec.Pod
	if end := finished(restartPolicy(k), st); end != nil {
		pd.rec.Finished = end
		p.saveLocked(name, pd)
		if pd.probes != nil {
			pd.probes()
			pd.probes = nil
		}
		p.opts.Log.Info("pod finished", "pod", k.Namespace+"/"+k.Name, "phase", finishedPhase(end), "exit", end.ExitCode)
		return
	}
	if !pd.sync.retryAt.IsZero() {
		return // scheduled already
	}
	wait := p.backoffLocked(pd)
	p.event(k, corev1.EventTypeWarning, "BackOff", "back-off %s restarting the micro-VM: %s", wait, ending(st))
}

// saveLocked writes the pod's record (p.mu held); a record that cannot be
// written is logged: the pod runs on, and the next change writes it again.
func (p *Provider) saveLocked(name string, pd *pod) {
	if err := p.records.save(name, pd.rec); err != nil {
		p.opts.Log.Error("record a pod", "vm", name, "err", err)
	}
}

// retryDue puts every pod's VM whose next try is due.
func (p *Provider) retryDue(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for name, pd := range p.pods {
		if !pd.sync.retryAt.IsZero() && !now.Before(pd.sync.retryAt) {
			p.kickLocked(name, pd)
		}
	}
}

// vmEntry is the VM's entry for the daemon, as a file would hold it.
func vmEntry(spec config.VMSpec) ([]byte, error) {
	data, err := yaml.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("the VM's entry: %w", err)
	}
	return data, nil
}
