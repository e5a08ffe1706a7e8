package kubelet

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/podvm"
	"microvm.dev/microvm/internal/vmm"
	"microvm.dev/microvm/internal/vmssh"
)

// startProbes (p.mu held) starts the pod's readiness and liveness probes; they
// run while the VM runs, from the host, and end with the pod.
func (p *Provider) startProbes(pd *pod) {
	if pd.vm == nil || pd.probes != nil || (pd.vm.Readiness == nil && pd.vm.Liveness == nil) {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	pd.probes = cancel
	name := pd.vm.Name
	if r := pd.vm.Readiness; r != nil {
		go p.runProbe(ctx, name, r, func(ok bool) {
			p.mu.Lock()
			if pd.ready != ok {
				pd.ready, pd.readySince = ok, time.Now()
			}
			p.mu.Unlock()
			p.push(name)
		})
	}
	if l := pd.vm.Liveness; l != nil {
		go p.runProbe(ctx, name, l, func(ok bool) {
			if ok {
				return
			}
			p.event(pd.rec.Pod, corev1.EventTypeWarning, "Unhealthy", "liveness probe failed %d times; restarting the micro-VM", l.FailureThreshold)
			if err := p.opts.Daemon.Do("POST", "/v1/vms/"+name+"/restart", nil, nil); err != nil {
				p.opts.Log.Warn("restart after the liveness probe", "vm", name, "err", err)
			}
		})
	}
}

// runProbe runs pr against the VM name every period while it runs, and
// calls verdict when the result turns (after the thresholds; a boot of the
// VM starts it over, not ready).
func (p *Provider) runProbe(ctx context.Context, name string, pr *podvm.Probe, verdict func(ok bool)) {
	var booted time.Time
	ok, streak := false, 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(pr.Period) * time.Second):
		}
		p.mu.Lock()
		st, known := p.vms[name]
		p.mu.Unlock()
		if !known || st.State != apitypes.Running || st.Spec == nil {
			continue
		}
		if !st.StartedAt.Equal(booted) {
			booted, ok, streak = st.StartedAt, false, 0
			verdict(false)
		}
		if time.Since(st.StartedAt) < time.Duration(pr.InitialDelay)*time.Second {
			continue
		}
		err := p.probe(ctx, st, pr)
		switch {
		case (err == nil) == ok:
			streak = 0
		case err == nil:
			if streak++; streak >= pr.SuccessThreshold {
				ok, streak = true, 0
				verdict(true)
			}
		default:
			if streak++; streak >= pr.FailureThreshold {
				ok, streak = false, 0
				verdict(false)
			}
		}
	}
}

// probe runs pr once against the running VM st.
func (p *Provider) probe(ctx context.Context, st apitypes.VMStatus, pr *podvm.Probe) error {
	timeout := time.Duration(pr.Timeout) * time.Second
	addr := st.Spec.Net.Address.String()
	switch {
	case pr.TCP > 0:
		c, err := vmssh.DialIn(p.opts.NetNS, net.JoinHostPort(addr, strconv.Itoa(pr.TCP)), timeout)
		if err != nil {
			return err
		}
		return c.Close()
	case pr.HTTP > 0:
		client := &http.Client{Timeout: timeout, Transport: &http.Transport{
			DialContext: func(_ context.Context, _, a string) (net.Conn, error) { return vmssh.DialIn(p.opts.NetNS, a, timeout) },
		}}
		req, err := http.NewRequestWithContext(ctx, "GET", "http://"+net.JoinHostPort(addr, strconv.Itoa(pr.HTTP))+pr.Path, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return nil
	default:
		s, closeSession, err := vmssh.Session(p.opts.StateDir, st.Name, addr, p.opts.NetNS, timeout)
		if err != nil {
			return err
		}
		defer closeSession()
		done := make(chan error, 1)
		go func() { done <- s.Run(vmm.ShellQuote(pr.Exec)) }()
		select {
		case err := <-done:
			return err
		case <-time.After(timeout):
			return fmt.Errorf("timed out after %s", timeout)
		}
	}
}
