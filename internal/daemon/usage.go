package daemon

import (
	"fmt"
	"time"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/supervisor"
	"microvm.dev/microvm/internal/vmm"
	"microvm.dev/microvm/internal/vmm/backends"
)

// SampleEvery is how often the daemon measures its running VMs and
// checks the host's memory against host.reclaim.
const SampleEvery = 10 * time.Second

// meter is a VM's process whose cost to the host can be measured and
// whose balloon can be set: the real hypervisors' (launcher.go) and the
// test's stand-ins.
type meter interface {
	// Measure is the VM's memory and CPU time now (its Time unset).
	Measure() (apitypes.VMSample, error)
	// SetBalloon has the guest give up taken bytes (0: all back).
	SetBalloon(taken int64) error
	// Balloon is what the guest has given up.
	Balloon() (int64, error)
}

// SetSampleEvery makes the daemon sample its VMs every every (default
// SampleEvery), from now on.
func (d *Daemon) SetSampleEvery(every time.Duration) {
	d.sampleEvery.Store(int64(every))
	select {
	case d.resample <- struct{}{}:
	default:
	}
}

// measureLoop samples the VMs every sampleEvery until the daemon closes.
func (d *Daemon) measureLoop() {
	t := time.NewTimer(time.Duration(d.sampleEvery.Load()))
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-d.resample:
		case <-t.C:
			d.Sample()
		}
		t.Reset(time.Duration(d.sampleEvery.Load()))
	}
}

// Sample measures every running VM once (its memory, CPU time, network
// and balloon, kept for an hour: Samples), then takes memory back from VMs
// or gives it back as host.reclaim says.
func (d *Daemon) Sample() {
	now := time.Now()
	d.netMu.Lock()
	counters, err := d.net.Host().Counters()
	d.netMu.Unlock()
	if err != nil {
		d.log.Warn("read the VMs' network counters", "err", err)
	}
	meters := map[string]meter{}
	for _, st := range d.sup.List() {
		r, ok := d.sup.Process(st.Name)
		if !ok || st.Spec == nil {
			continue
		}
		m, ok := r.(meter)
		if !ok {
			continue
		}
		meters[st.Name] = m
		s, err := m.Measure()
		if err != nil {
			d.log.Warn("measure a VM", "vm", st.Name, "err", err)
			continue
		}
		s.Time = now
		// The TAP sends what the VM receives.
		c := counters[st.Spec.Net.TAP]
		s.ReceivedBytes, s.SentBytes = c.Sent, c.Received
		if b, err := m.Balloon(); err == nil {
			s.BalloonBytes = b
		}
		d.usage.Add(st.Name, s)
	}
	d.usage.Keep(func(vm string) bool {
		_, known := d.sup.Status(vm)
		return known
	})
	d.reclaim(meters)
}

// reclaim applies host.reclaim: once the host's available memory is below
// its threshold, every running VM with a memoryMin is ballooned down to
// it; once it is above the release threshold, or host.reclaim is gone,
// every balloon is deflated. A VM started while memory is short is
// ballooned at the next sample.
func (d *Daemon) reclaim(meters map[string]meter) {
	var r *config.Reclaim
	if cfg := d.applied(); cfg != nil {
		r = cfg.Host.Reclaim
	}
	short := d.short.Load()
	if r != nil {
		avail, err := d.proc.Available()
		if err != nil {
			d.log.Warn("read the host's available memory", "err", err)
			return
		}
		switch {
		case !short && avail < int64(r.Below):
			short = true
			d.log.Warn("the host is short of memory: taking it back from the VMs with a memoryMin", "available", config.Size(avail), "below", r.Below)
		case short && avail > int64(r.ReleaseAbove()):
			short = false
			d.log.Info("the host has memory again: giving it back to the VMs", "available", config.Size(avail), "above", r.ReleaseAbove())
		}
	} else {
		short = false
	}
	d.short.Store(short)
	for name, m := range meters {
		vm := d.vmSpec(name)
		if vm == nil {
			continue
		}
		var want int64
		if short && vm.Supervision.MemoryMin > 0 {
			want = int64(vm.Memory - vm.Supervision.MemoryMin)
		}
		have, err := m.Balloon()
		if err == nil && have == want {
			continue
		}
		if err := m.SetBalloon(want); err != nil {
			d.log.Error("set a VM's balloon", "vm", name, "taken", config.Size(want), "err", err)
		}
	}
}

// vmSpec is the spec the VM name runs with (the supervisor's).
func (d *Daemon) vmSpec(name string) *config.VM {
	if st, ok := d.sup.Status(name); ok {
		return st.Spec
	}
	return nil
}

// Samples are the VM's samples of the last hour, oldest first.
func (d *Daemon) Samples(name string) []apitypes.VMSample { return d.usage.Samples(name) }

// AllSamples are every running VM's samples of the last hour, by name.
func (d *Daemon) AllSamples() map[string][]apitypes.VMSample { return d.usage.All() }

// Short says whether the host is short of memory (host.reclaim), and its
// available memory now.
func (d *Daemon) Short() (bool, int64, error) {
	avail, err := d.proc.Available()
	return d.short.Load(), avail, err
}

// statusOf adds to a VM's status what the daemon knows of it beside the
// supervisor: the network namespace its address is reached in and its
// last measure.
func (d *Daemon) statusOf(st supervisor.Status) supervisor.Status {
	st.Netns = d.env.NetNS
	if st.PID == 0 {
		return st
	}
	if s, ok := d.usage.Last(st.Name); ok {
		m := s.Memory()
		st.HostMemory = &m
	}
	return st
}

// usageWarnings are what the file asks of memory that this host will
// not do: a memoryMin without host.reclaim; KSM for VMs whose memory it
// cannot merge (Firecracker's, which it does not mark mergeable; a
// virtiofs store's, shared with virtiofsd: the kernel merges only private
// memory).
func (d *Daemon) usageWarnings(cfg *config.Config) []string {
	var out []string
	ksmOn := cfg.Host.KSM != nil && cfg.Host.KSM.Enabled
	for _, vm := range cfg.VMs {
		if vm.Supervision.MemoryMin > 0 && cfg.Host.Reclaim == nil {
			out = append(out, fmt.Sprintf("vms.%s.memoryMin has no effect without host.reclaim", vm.Name))
		}
		if !ksmOn {
			continue
		}
		b, err := backends.Get(vm.Hypervisor)
		if err != nil {
			continue
		}
		switch share, _ := d.env.ShareKind(b, vm); {
		case vm.Hypervisor == config.HypervisorFirecracker:
			out = append(out, fmt.Sprintf("vms.%s: host.ksm does not merge a Firecracker VM's memory (Firecracker does not mark it mergeable)", vm.Name))
		case share == vmm.ShareVirtiofs:
			out = append(out, fmt.Sprintf("vms.%s: host.ksm does not merge its memory: with a virtiofs store it is shared with virtiofsd, and the kernel merges only private memory (store: block or 9p)", vm.Name))
		}
	}
	return out
}
