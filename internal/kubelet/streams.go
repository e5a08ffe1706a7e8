package kubelet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	vkapi "github.com/virtual-kubelet/virtual-kubelet/node/api"
	"golang.org/x/crypto/ssh"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
	utilexec "k8s.io/utils/exec"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/podvm"
	"microvm.dev/microvm/internal/vmm"
	"microvm.dev/microvm/internal/vmssh"
)

// running is the VM of the pod namespace/name, which must be running.
func (p *Provider) running(namespace, name string) (apitypes.VMStatus, error) {
	vm := podvm.Name(namespace, name)
	p.mu.Lock()
	_, ok := p.pods[vm]
	st, known := p.vms[vm]
	p.mu.Unlock()
	switch {
	case !ok:
		return st, errdefs.NotFoundf("pod %s/%s is not on this node", namespace, name)
	case !known || st.State != apitypes.Running || st.Spec == nil:
		return st, errdefs.InvalidInputf("pod %s/%s: its micro-VM %s is %s, not running", namespace, name, vm, st.State)
	}
	return st, nil
}

// GetContainerLogs is the VM's console: the workload's output (and the
// guest's boot). Tail counts lines of the log as it is now; with Follow
// the log goes on until the client leaves.
func (p *Provider) GetContainerLogs(ctx context.Context, namespace, podName, _ string, opts vkapi.ContainerLogOpts) (io.ReadCloser, error) {
	vm := podvm.Name(namespace, podName)
	p.mu.Lock()
	_, ok := p.pods[vm]
	p.mu.Unlock()
	if !ok {
		return nil, errdefs.NotFoundf("pod %s/%s is not on this node", namespace, podName)
	}
	if opts.Previous {
		return nil, errdefs.InvalidInput("--previous: a micro-VM's console log runs on across its restarts; read it without --previous")
	}
	path := "/v1/vms/" + vm + "/logs"
	if !opts.Follow {
		var buf bytes.Buffer
		if err := p.opts.Daemon.StreamContext(ctx, path, &buf); err != nil {
			return nil, err
		}
		b := buf.Bytes()
		if opts.Tail > 0 {
			b = tail(b, opts.Tail)
		}
		if opts.LimitBytes > 0 && len(b) > opts.LimitBytes {
			b = b[:opts.LimitBytes]
		}
		return io.NopCloser(bytes.NewReader(b)), nil
	}
	r, w := io.Pipe()
	go func() { w.CloseWithError(p.opts.Daemon.StreamContext(ctx, path+"?follow=true", w)) }()
	return r, nil
}

// tail is the last n lines of b.
func tail(b []byte, n int) []byte {
	end := len(b)
	if end > 0 && b[end-1] == '\n' {
		end--
	}
	for i := end - 1; i >= 0; i-- {
		if b[i] == '\n' {
			if n--; n == 0 {
				return b[i+1:]
			}
		}
	}
	return b
}

// RunInContainer runs cmd in the pod's VM over SSH as root with microvm's
// key (the VM's host key pinned), with a terminal when asked; the
// command's exit status is kubectl's.
func (p *Provider) RunInContainer(ctx context.Context, namespace, podName, _ string, cmd []string, attach vkapi.AttachIO) error {
	st, err := p.running(namespace, podName)
	if err != nil {
		return err
	}
	s, closeSession, err := vmssh.Session(p.opts.StateDir, st.Name, st.Spec.Net.Address.String(), p.opts.NetNS, 10*time.Second)
	if err != nil {
		return err
	}
	defer closeSession()
	if attach.Stdin() != nil {
		s.Stdin = attach.Stdin()
	}
	if attach.Stdout() != nil {
		s.Stdout = attach.Stdout()
	}
	if attach.Stderr() != nil {
		s.Stderr = attach.Stderr()
	}
	if attach.TTY() {
		if err := s.RequestPty("xterm", 24, 80, ssh.TerminalModes{ssh.ECHO: 1}); err != nil {
			return fmt.Errorf("exec in %s: a terminal: %w", st.Name, err)
		}
		go func() {
			for size := range attach.Resize() {
				s.WindowChange(int(size.Height), int(size.Width))
			}
		}()
	}
	if err := s.Start(vmm.ShellQuote(cmd)); err != nil {
		return fmt.Errorf("exec in %s: %w", st.Name, err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Wait() }()
	select {
	case <-ctx.Done():
		s.Signal(ssh.SIGKILL)
		return ctx.Err()
	case err = <-done:
	}
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		return utilexec.CodeExitError{Err: err, Code: ee.ExitStatus()}
	}
	return err
}

// AttachToContainer is refused: the workload's console is a log here, and
// kubectl exec gives a shell.
func (p *Provider) AttachToContainer(context.Context, string, string, string, vkapi.AttachIO) error {
	return errdefs.InvalidInput("kubectl attach is not supported by microvm: use kubectl logs -f for the workload's output and kubectl exec for a shell")
}

// PortForward joins stream to port of the pod's VM.
func (p *Provider) PortForward(ctx context.Context, namespace, podName string, port int32, stream io.ReadWriteCloser) error {
	st, err := p.running(namespace, podName)
	if err != nil {
		return err
	}
	defer stream.Close()
	c, err := vmssh.DialIn(p.opts.NetNS, net.JoinHostPort(st.Spec.Net.Address.String(), strconv.Itoa(int(port))), 10*time.Second)
	if err != nil {
		return fmt.Errorf("port-forward to %s port %d: %w", st.Name, port, err)
	}
	defer c.Close()
	// The forward ends when the VM's side does (as a kubelet's socat's
	// does): the client's side is closed with the stream.
	go io.Copy(c, stream)
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(stream, c)
		done <- err
	}()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case err := <-done:
		return err
	}
}

// GetStatsSummary reports the node and its pods without usage figures: the
// VMs' use is read with microvm's own metrics (microvm daemon --metrics).
func (p *Provider) GetStatsSummary(context.Context) (*statsv1alpha1.Summary, error) {
	sum := &statsv1alpha1.Summary{Node: statsv1alpha1.NodeStats{NodeName: p.opts.Node}}
	pods, _ := p.GetPods(context.Background())
	for _, k := range pods {
		sum.Pods = append(sum.Pods, statsv1alpha1.PodStats{PodRef: statsv1alpha1.PodReference{Name: k.Name, Namespace: k.Namespace, UID: string(k.UID)}})
	}
	return sum, nil
}

// GetMetricsResource has no figures (see GetStatsSummary).
func (p *Provider) GetMetricsResource(context.Context) ([]*dto.MetricFamily, error) {
	return nil, nil
}
