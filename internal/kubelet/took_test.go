package kubelet

import (
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"microvm.dev/microvm/internal/api"
)

// A pod whose image cannot be pulled stays ImagePullBackOff while the
// daemon restarts: a try that could not reach the daemon does not make
// it RunContainerError; the daemon's own answer does change it.
func TestUnreachableDaemonKeepsTheReason(t *testing.T) {
	p := &Provider{opts: Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Backoff: time.Second, MaxBackoff: time.Minute}}
	pd := &pod{rec: &podRecord{Pod: &corev1.Pod{}}}
	pull := &api.StatusError{Code: 502, Message: "vm: vms.vm.image: pull registry.test/missing:1: manifest unknown"}
	p.tookLocked("vm", pd, nil, nil, pull)
	if got := launchReason(pd.launchErr); got != "ImagePullBackOff" {
		t.Fatalf("after a failed pull: %s (%q)", got, pd.launchErr)
	}
	p.tookLocked("vm", pd, nil, nil, errors.New(`talk to the daemon on /run/microvm/microvm.sock: Put "http://microvm/v1/vms/vm": EOF`))
	if got := launchReason(pd.launchErr); got != "ImagePullBackOff" {
		t.Errorf("after a try the daemon did not answer: %s (%q)", got, pd.launchErr)
	}
	p.tookLocked("vm", pd, nil, nil, &api.StatusError{Code: 500, Message: "vm: the kernel is missing"})
	if got := launchReason(pd.launchErr); got != "RunContainerError" {
		t.Errorf("after the daemon's own other answer: %s (%q)", got, pd.launchErr)
	}
	fresh := &pod{rec: &podRecord{Pod: &corev1.Pod{}}}
	p.tookLocked("vm2", fresh, nil, nil, errors.New("talk to the daemon: connection refused"))
	if fresh.launchErr == "" {
		t.Error("a first try the daemon did not answer left no reason")
	}
}
