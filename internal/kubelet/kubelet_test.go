package kubelet

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/podvm"
)

func testPod() *corev1.Pod {
	no := false
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web", UID: "u1", Annotations: map[string]string{podvm.AnnotationVolumes: "data=64Mi"}},
		Spec: corev1.PodSpec{AutomountServiceAccountToken: &no, Containers: []corev1.Container{{
			Name: "web", Image: "nginx", Ports: []corev1.ContainerPort{{ContainerPort: 80}},
			VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}},
		}}, Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}},
	}
}

// A pod's VM entry is one the daemon takes beside the host's file (as
// config.ParseWith composes them): every key of the host's applies to it,
// and the pod's VM is as mapped.
func TestEntryComposes(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "host.yaml")
	os.WriteFile(path, []byte("host: { externalInterface: lan0, ipv6Prefix: none }\ndefaults: { stopTimeout: 20s }\nvms:\n  own: { index: 7, memory: 256M }\n"), 0o644)
	base, err := readBase(path)
	if err != nil {
		t.Fatal(err)
	}
	if s := base.subnets(); len(s) != 1 || s[0].String() != "10.7.0.0/24" {
		t.Errorf("the host's subnets: %v", s)
	}
	vm, err := podvm.Map(testPod(), netip.MustParsePrefix("10.244.1.0/29"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := vmEntry(vm.Spec)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.ParseWith("host.yaml", base.data, map[string][]byte{vm.Name: data}, config.Options{})
	if err != nil {
		t.Fatalf("the entry is refused: %v\n%s", err, data)
	}
	own, pvm := cfg.VM("own"), cfg.VM(vm.Name)
	if own == nil || own.Memory != 256*config.MiB || pvm == nil || pvm.Net.Address.String() != "10.244.1.2" || pvm.Image != "nginx" ||
		len(pvm.Volumes) != 1 || pvm.Ports[0].String() != "80/tcp" || pvm.Supervision.StopTimeout != config.Duration(20*time.Second) || cfg.Host.ExternalInterface != "lan0" || pvm.Net.HasIPv6() {
		t.Errorf("composed with the entry:\n%s", data)
	}

	// A VM of the host's that a pod's name could collide with is refused.
	os.WriteFile(path, []byte("vms:\n  k0123456789a: { index: 1 }\n"), 0o644)
	if _, err := readBase(path); err == nil || !strings.Contains(err.Error(), "named as a pod's VM") {
		t.Errorf("a host VM with a pod's name: %v", err)
	}
}

func TestAllocate(t *testing.T) {
	cidr := netip.MustParsePrefix("10.244.1.0/24")
	used := []netip.Prefix{netip.MustParsePrefix("10.244.1.0/29"), netip.MustParsePrefix("10.244.1.16/28")}
	if p, err := allocate(cidr, 29, used); err != nil || p.String() != "10.244.1.8/29" {
		t.Errorf("first free: %v %v", p, err)
	}
	if _, err := allocate(netip.MustParsePrefix("10.244.1.0/29"), 29, used); err == nil {
		t.Error("a full CIDR gave a subnet")
	}
}

func TestRecords(t *testing.T) {
	r := records{filepath.Join(t.TempDir(), "pods")}
	rec := &podRecord{Pod: testPod(), Subnet: netip.MustParsePrefix("10.244.1.8/29")}
	if err := r.save("kabc", rec); err != nil {
		t.Fatal(err)
	}
	got, err := r.load()
	if err != nil || len(got) != 1 || got["kabc"].Pod.UID != "u1" || got["kabc"].Subnet != rec.Subnet {
		t.Fatalf("loaded %v %v", got, err)
	}
	if err := r.remove("kabc"); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.load(); len(got) != 0 {
		t.Errorf("after remove: %v", got)
	}
	os.WriteFile(r.path("kbad"), []byte("{"), 0o600)
	if _, err := r.load(); err == nil {
		t.Error("a damaged record loaded")
	}
}

// The pod's status follows its VM's, as its restart policy reads it.
func TestPodStatus(t *testing.T) {
	k := testPod()
	vm, _ := podvm.Map(k, netip.MustParsePrefix("10.244.1.8/29"))
	spec := &config.VM{Net: config.Net{Address: netip.MustParseAddr("10.244.1.10")}}
	node := netip.MustParseAddr("192.168.1.5")
	two, zero := 2, 0
	for _, tc := range []struct {
		policy            corev1.RestartPolicy
		st                apitypes.VMStatus
		known             bool
		launchErr         string
		phase             corev1.PodPhase
		ready             bool
		state, reason, ip string
		exit              int32
	}{
		{known: false, phase: corev1.PodPending, state: "waiting", reason: "ContainerCreating"},
		{st: apitypes.VMStatus{State: apitypes.Starting, Spec: spec}, known: true, phase: corev1.PodPending, state: "waiting", reason: "ContainerCreating", ip: "10.244.1.10"},
		{st: apitypes.VMStatus{State: apitypes.Running, Spec: spec, StartedAt: time.Now()}, known: true, phase: corev1.PodRunning, ready: true, state: "running", ip: "10.244.1.10"},
		{st: apitypes.VMStatus{State: apitypes.Backoff, Spec: spec, LastExit: "workload exited 2", ExitCode: &two, Restarts: 1}, known: true, phase: corev1.PodRunning, state: "waiting", reason: "CrashLoopBackOff", ip: "10.244.1.10"},
		// Under Always a VM that ended waits for its next start.
		{st: apitypes.VMStatus{State: apitypes.Stopped, Spec: spec, LastExit: "workload exited 0", ExitCode: &zero}, known: true, phase: corev1.PodRunning, state: "waiting", reason: "CrashLoopBackOff", ip: "10.244.1.10"},
		{st: apitypes.VMStatus{State: apitypes.Failed, Spec: spec, Failure: "crash loop"}, known: true, phase: corev1.PodRunning, state: "waiting", reason: "CrashLoopBackOff", ip: "10.244.1.10"},
		// Under OnFailure a success is final, a failure is not.
		{policy: corev1.RestartPolicyOnFailure, st: apitypes.VMStatus{State: apitypes.Stopped, Spec: spec, LastExit: "workload exited 0", ExitCode: &zero}, known: true, phase: corev1.PodSucceeded, state: "terminated", reason: "Completed", ip: "10.244.1.10"},
		{policy: corev1.RestartPolicyOnFailure, st: apitypes.VMStatus{State: apitypes.Failed, Spec: spec, LastExit: "workload exited 2", ExitCode: &two}, known: true, phase: corev1.PodRunning, state: "waiting", reason: "CrashLoopBackOff", ip: "10.244.1.10"},
		// Under Never every end is final.
		{policy: corev1.RestartPolicyNever, st: apitypes.VMStatus{State: apitypes.Failed, Spec: spec, LastExit: "workload exited 2", ExitCode: &two}, known: true, phase: corev1.PodFailed, state: "terminated", reason: "Error", ip: "10.244.1.10", exit: 2},
		{policy: corev1.RestartPolicyNever, st: apitypes.VMStatus{State: apitypes.Failed, Spec: spec, Failure: "no such image"}, known: true, phase: corev1.PodFailed, state: "terminated", reason: "VMFailed", ip: "10.244.1.10", exit: 1},
		// A launch that failed is waited on, whatever the policy.
		{policy: corev1.RestartPolicyNever, st: apitypes.VMStatus{State: apitypes.Failed, Spec: spec, Failure: "pull x: 404"}, known: true, launchErr: "pull x: 404", phase: corev1.PodPending, state: "waiting", reason: "ImagePullBackOff", ip: "10.244.1.10"},
		{launchErr: "kernel missing", phase: corev1.PodPending, state: "waiting", reason: "RunContainerError"},
	} {
		k := k.DeepCopy()
		k.Spec.RestartPolicy = tc.policy
		pd := &pod{rec: &podRecord{Pod: k}, vm: vm, ready: true, launchErr: tc.launchErr}
		s := podStatus(pd, tc.st, tc.known, node)
		cs := s.ContainerStatuses[0]
		state, reason, exit := "", "", int32(0)
		switch {
		case cs.State.Running != nil:
			state = "running"
		case cs.State.Waiting != nil:
			state, reason = "waiting", cs.State.Waiting.Reason
		case cs.State.Terminated != nil:
			state, reason, exit = "terminated", cs.State.Terminated.Reason, cs.State.Terminated.ExitCode
		}
		if s.Phase != tc.phase || cs.Ready != tc.ready || state != tc.state || reason != tc.reason || s.PodIP != tc.ip || exit != tc.exit || s.HostIP != "192.168.1.5" {
			t.Errorf("%s VM %s (launch error %q): phase %s ready %v %s %s exit %d ip %q", tc.policy, tc.st.State, tc.launchErr, s.Phase, cs.Ready, state, reason, exit, s.PodIP)
		}
	}
	pd := &pod{rec: &podRecord{Pod: k}, vm: vm}
	// Not ready until the readiness probe says so.
	if s := podStatus(pd, apitypes.VMStatus{State: apitypes.Running, Spec: spec}, true, node); s.ContainerStatuses[0].Ready || s.Conditions[3].Status != corev1.ConditionFalse {
		t.Error("ready without the probe's success")
	}
	// A finished pod keeps its end, whatever its VM does.
	pd.rec.Finished = &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed"}
	if s := podStatus(pd, apitypes.VMStatus{State: apitypes.Running, Spec: spec}, true, node); s.Phase != corev1.PodSucceeded || s.ContainerStatuses[0].State.Terminated == nil {
		t.Errorf("finished: %s %+v", s.Phase, s.ContainerStatuses[0].State)
	}
	// A refused pod fails with the reason.
	refused := &pod{rec: &podRecord{Pod: k, Refusal: "the pod cannot run as a micro-VM: x"}}
	if s := podStatus(refused, apitypes.VMStatus{}, false, node); s.Phase != corev1.PodFailed || s.Reason != "Unsupported" || s.Message != refused.rec.Refusal {
		t.Errorf("refused: %s %s %q", s.Phase, s.Reason, s.Message)
	}
}

func TestTail(t *testing.T) {
	if got := string(tail([]byte("a\nb\nc\n"), 2)); got != "b\nc\n" {
		t.Errorf("tail 2 = %q", got)
	}
	if got := string(tail([]byte("a\nb"), 5)); got != "a\nb" {
		t.Errorf("tail 5 = %q", got)
	}
}
