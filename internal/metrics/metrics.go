// Package metrics exposes the daemon's state in the Prometheus text format
// (with the official client library): per-VM state, boot time, restarts,
// uptime, vCPUs and memory read from the supervisor at scrape time; the
// GitOps loop's generation, last success, failures, rollbacks and fetch
// errors; and a histogram of reconcile (apply) durations.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"microvm.dev/microvm/internal/daemon"
	"microvm.dev/microvm/internal/deploy"
	"microvm.dev/microvm/internal/generation"
	"microvm.dev/microvm/internal/supervisor"
)

// States a VM may be in, each exported as one microvm_vm_state series.
var states = []supervisor.State{supervisor.Created, supervisor.Starting, supervisor.Running, supervisor.Stopping, supervisor.Stopped, supervisor.Saved, supervisor.Backoff, supervisor.Failed}

// New returns the /metrics handler for d (and dep, when the daemon deploys
// from git) and starts observing applies.
func New(d *daemon.Daemon, dep *deploy.Engine) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reconcile := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "microvm_reconcile_duration_seconds",
		Help:    "How long applies took (validation, stops, network, starts until ready), by outcome.",
		Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300},
	}, []string{"outcome"})
	reg.MustRegister(reconcile)
	d.OnApply(func(res *daemon.ApplyResult, err error) {
		outcome := "ok"
		if err != nil {
			outcome = "error"
		}
		reconcile.WithLabelValues(outcome).Observe(res.Seconds)
	})
	reg.MustRegister(&fleet{d: d, dep: dep})
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// fleet reads the supervisor and the deploy loop at scrape time.
type fleet struct {
	d   *daemon.Daemon
	dep *deploy.Engine
}

var (
	vmState    = prometheus.NewDesc("microvm_vm_state", "1 for the state the VM is in.", []string{"vm", "state"}, nil)
	vmUp       = prometheus.NewDesc("microvm_vm_up", "1 when the VM is running (ready).", []string{"vm", "hypervisor"}, nil)
	vmBoot     = prometheus.NewDesc("microvm_vm_boot_seconds", "How long the VM's last boot took until ready.", []string{"vm"}, nil)
	vmRestarts = prometheus.NewDesc("microvm_vm_restarts_total", "Restarts after the VM's hypervisor exited on its own.", []string{"vm"}, nil)
	vmUptime   = prometheus.NewDesc("microvm_vm_uptime_seconds", "Seconds since the VM's hypervisor started.", []string{"vm"}, nil)
	vmVCPU     = prometheus.NewDesc("microvm_vm_vcpus", "The VM's virtual CPUs.", []string{"vm"}, nil)
	vmMemory   = prometheus.NewDesc("microvm_vm_memory_bytes", "The VM's memory.", []string{"vm"}, nil)
	vmExitCode = prometheus.NewDesc("microvm_vm_last_exit_code", "The exit status of the workload whose end last ended the VM.", []string{"vm"}, nil)
	vmHostMem  = prometheus.NewDesc("microvm_vm_host_memory_bytes", "What the running VM costs the host in memory, as last measured: the guest's memory resident on the host, the hypervisor's own, its helpers' (virtiofsd).", []string{"vm", "kind"}, nil)
	vmBalloon  = prometheus.NewDesc("microvm_vm_balloon_bytes", "The memory the host has taken back from the guest (host.reclaim).", []string{"vm"}, nil)
	vmCPU      = prometheus.NewDesc("microvm_vm_cpu_seconds_total", "CPU time the VM's hypervisor and helpers have used since they started.", []string{"vm"}, nil)
	vmNet      = prometheus.NewDesc("microvm_vm_network_bytes_total", "Bytes the VM has received and sent on its network interface.", []string{"vm", "direction"}, nil)

	hostAvail  = prometheus.NewDesc("microvm_host_memory_available_bytes", "The host's available memory (MemAvailable).", nil, nil)
	hostShort  = prometheus.NewDesc("microvm_host_memory_short", "1 while the host is short of memory and the VMs with a memoryMin are ballooned down (host.reclaim).", nil, nil)
	ksmRunning = prometheus.NewDesc("microvm_host_ksm_running", "1 while the host's samepage merging runs.", nil, nil)
	ksmShared  = prometheus.NewDesc("microvm_host_ksm_pages_shared", "Pages KSM keeps once for many (pages_shared).", nil, nil)
	ksmSharing = prometheus.NewDesc("microvm_host_ksm_pages_sharing", "Pages that share them: the pages saved (pages_sharing).", nil, nil)
	ksmProfit  = prometheus.NewDesc("microvm_host_ksm_profit_bytes", "What merging saves, less its own metadata (general_profit).", nil, nil)

	depGen       = prometheus.NewDesc("microvm_deploy_generation", "The generation the fleet runs (the last good one).", nil, nil)
	depAttempt   = prometheus.NewDesc("microvm_deploy_last_attempt_generation", "The newest generation tried.", nil, nil)
	depSuccess   = prometheus.NewDesc("microvm_deploy_last_success_timestamp_seconds", "When the running generation finished deploying.", nil, nil)
	depDeploys   = prometheus.NewDesc("microvm_deploy_attempts_total", "Deploys tried since the daemon started.", nil, nil)
	depFailures  = prometheus.NewDesc("microvm_deploy_failures_total", "Deploys that failed (refused, unhealthy) since the daemon started.", nil, nil)
	depRollbacks = prometheus.NewDesc("microvm_deploy_rollbacks_total", "Automatic rollbacks since the daemon started.", nil, nil)
	depFetchErrs = prometheus.NewDesc("microvm_deploy_fetch_errors_total", "Failed fetches of the repository since the daemon started.", nil, nil)
	depSuspended = prometheus.NewDesc("microvm_deploy_suspended", "1 while polling is suspended.", nil, nil)
)

func (f *fleet) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{vmState, vmUp, vmBoot, vmRestarts, vmUptime, vmVCPU, vmMemory, vmExitCode,
		vmHostMem, vmBalloon, vmCPU, vmNet, hostAvail, hostShort, ksmRunning, ksmShared, ksmSharing, ksmProfit,
		depGen, depAttempt, depSuccess, depDeploys, depFailures, depRollbacks, depFetchErrs, depSuspended} {
		ch <- d
	}
}

func (f *fleet) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, st := range f.d.List() {
		for _, s := range states {
			gauge(vmState, b2f(st.State == s), st.Name, string(s))
		}
		hyp := ""
		if st.Spec != nil {
			hyp = st.Spec.Hypervisor
			gauge(vmVCPU, float64(st.Spec.VCPU), st.Name)
			gauge(vmMemory, float64(st.Spec.Memory), st.Name)
		}
		gauge(vmUp, b2f(st.State == supervisor.Running), st.Name, hyp)
		if st.BootSeconds > 0 {
			gauge(vmBoot, st.BootSeconds, st.Name)
		}
		if st.ExitCode != nil {
			gauge(vmExitCode, float64(*st.ExitCode), st.Name)
		}
		ch <- prometheus.MustNewConstMetric(vmRestarts, prometheus.CounterValue, float64(st.Restarts), st.Name)
		if !st.StartedAt.IsZero() && st.State == supervisor.Running {
			gauge(vmUptime, time.Since(st.StartedAt).Seconds(), st.Name)
		}
		if st.HostMemory != nil {
			f.usage(ch, st.Name)
		}
	}
	m := f.d.MemoryState()
	gauge(hostAvail, float64(m.AvailableBytes))
	gauge(hostShort, b2f(m.Short))
	if k := m.KSM; k != nil {
		gauge(ksmRunning, b2f(k.Running))
		gauge(ksmShared, float64(k.PagesShared))
		gauge(ksmSharing, float64(k.PagesSharing))
		gauge(ksmProfit, float64(k.ProfitBytes))
	}
	if f.dep == nil {
		return
	}
	st, err := f.dep.Status()
	if err != nil {
		return
	}
	if g := st.Current; g != nil {
		gauge(depGen, float64(g.Number))
		gauge(depSuccess, float64(g.Finished.Unix()))
	} else {
		gauge(depGen, 0)
	}
	if g := st.Last; g != nil && g.Status != generation.Applying {
		gauge(depAttempt, float64(g.Number))
	}
	gauge(depSuspended, b2f(st.Suspended))
	c := f.dep.Counters()
	for d, v := range map[*prometheus.Desc]int{depDeploys: c.Deploys, depFailures: c.Failures, depRollbacks: c.Rollbacks, depFetchErrs: c.FetchErrors} {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
}

// usage is the VM's last sample: its host memory by kind, its balloon,
// its CPU time and its network's bytes.
func (f *fleet) usage(ch chan<- prometheus.Metric, vm string) {
	samples := f.d.Samples(vm)
	if len(samples) == 0 {
		return
	}
	s := samples[len(samples)-1]
	for kind, v := range map[string]int64{"guest": s.GuestBytes, "hypervisor": s.HypervisorBytes, "helpers": s.HelperBytes} {
		ch <- prometheus.MustNewConstMetric(vmHostMem, prometheus.GaugeValue, float64(v), vm, kind)
	}
	ch <- prometheus.MustNewConstMetric(vmBalloon, prometheus.GaugeValue, float64(s.BalloonBytes), vm)
	ch <- prometheus.MustNewConstMetric(vmCPU, prometheus.CounterValue, s.CPUSeconds, vm)
	ch <- prometheus.MustNewConstMetric(vmNet, prometheus.CounterValue, float64(s.ReceivedBytes), vm, "received")
	ch <- prometheus.MustNewConstMetric(vmNet, prometheus.CounterValue, float64(s.SentBytes), vm, "sent")
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
