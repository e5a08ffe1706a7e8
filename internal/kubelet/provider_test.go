package kubelet

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"

	"microvm.dev/microvm/internal/api"
	"microvm.dev/microvm/internal/apiserver"
	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/daemon"
	"microvm.dev/microvm/internal/launch"
	"microvm.dev/microvm/internal/podvm"
	"microvm.dev/microvm/internal/secrets"
	"microvm.dev/microvm/internal/state"
	"microvm.dev/microvm/internal/supervisor"
	"microvm.dev/microvm/internal/testutil"
	"microvm.dev/microvm/internal/testvmm"
)

// providerLab is a provider over an in-process daemon: the daemon's own
// API (apiserver.Handler) on a unix socket, the host network real in a
// namespace, and the hypervisors scripted by image name (testvmm; no
// hypervisor boots at the pace these tests need):
//
//	unpullable   the launch fails as a pull does
//	slow         the launch takes 3 s (an image pull)
//	stall        the guest never reports ready
//	exit0, exit3 the workload ends 300 ms after it is ready, with that code
//	anything else ready at once, running until stopped
type providerLab struct {
	env    launch.Env
	socket string
	base   string
	l      *testvmm.Launcher
	d      *daemon.Daemon
	srv    *http.Server
	p      *Provider
	cancel context.CancelFunc
	events *record.FakeRecorder
	seen   []string // the events read from events
	// secrets are the Secrets the provider reads, by namespace/name (the
	// API server's, for the pull secrets).
	secrets map[string]*corev1.Secret

	mu       sync.Mutex
	statuses map[string]corev1.PodStatus
}

func script(vm *config.VM) testvmm.Behaviour {
	switch vm.Image {
	case "unpullable":
		return testvmm.Behaviour{LaunchErr: errors.New("pull registry.test/unpullable: manifest unknown")}
	case "slow":
		return testvmm.Behaviour{LaunchDelay: 3 * time.Second}
	case "stall":
		return testvmm.Behaviour{NeverReady: true}
	case "exit0":
		return testvmm.Behaviour{ExitAfter: 300 * time.Millisecond}
	case "exit3":
		return testvmm.Behaviour{ExitAfter: 300 * time.Millisecond, ExitCode: 3}
	}
	return testvmm.Behaviour{}
}

func newProviderLab(t *testing.T) *providerLab {
	testutil.RequireRoot(t)
	ns := testutil.NewNetns(t, "kprov")
	ns.IP(t, "link", "add", "up0", "type", "bridge")
	dir := t.TempDir()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	lab := &providerLab{
		env: launch.Env{StateDir: filepath.Join(dir, "state"), RunDir: filepath.Join(dir, "run"), NetNS: ns.Path,
			Identities: []secrets.Identity{{Identity: id, Path: "test", Recipient: id.Recipient().String()}}},
		socket:  filepath.Join(dir, "microvm.sock"),
		base:    filepath.Join(dir, "host.yaml"),
		l:       &testvmm.Launcher{Script: script},
		secrets: map[string]*corev1.Secret{},
	}
	if err := os.WriteFile(lab.base, []byte("host: { externalInterface: up0, ipv6Prefix: none }\nvms: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	lab.startDaemon(t)
	lab.startProvider(t)
	t.Cleanup(func() {
		lab.cancel()
		// No put lands any more, and no VM is left to be restarted into
		// the state directory being removed.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		lab.srv.Shutdown(ctx)
		for _, st := range lab.d.Supervisor().List() {
			lab.d.Supervisor().Stop(st.Name)
		}
		time.Sleep(200 * time.Millisecond) // past the daemon's back-off, whose wake-up then finds the VM stopped
		lab.stopDaemon()
	})
	return lab
}

// startDaemon starts a daemon on the lab's state directory and serves its
// API on the socket.
func (lab *providerLab) startDaemon(t *testing.T) {
	d, err := daemon.NewWithLauncher(lab.env, lab.l, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	d.Supervisor().Tuning = supervisor.Tuning{FirstBackoff: 50 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, CrashLoopCount: 3, CrashLoopWindow: time.Minute, StableAfter: time.Minute}
	ln, err := net.Listen("unix", lab.socket)
	if err != nil {
		t.Fatal(err)
	}
	lab.d, lab.srv = d, &http.Server{Handler: apiserver.Handler(d, nil)}
	go lab.srv.Serve(ln)
}

func (lab *providerLab) stopDaemon() {
	lab.srv.Close()
	lab.d.Close()
	os.Remove(lab.socket)
}

// startProvider starts a provider on the lab's records and follows it.
func (lab *providerLab) startProvider(t *testing.T) {
	lab.events = record.NewFakeRecorder(10000)
	p, err := New(Options{
		Node: "n1", NodeIP: netip.MustParseAddr("192.168.1.5"), Daemon: api.NewClient(lab.socket),
		StateDir: lab.env.StateDir, NetNS: lab.env.NetNS, Records: filepath.Join(filepath.Dir(lab.socket), "pods"), Base: lab.base,
		PodCIDR: netip.MustParsePrefix("10.244.1.0/24"), Poll: 200 * time.Millisecond,
		Backoff: 200 * time.Millisecond, MaxBackoff: time.Second,
		Recorder: lab.events, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Secrets: func(_ context.Context, namespace, name string) (*corev1.Secret, error) {
			if s := lab.secrets[namespace+"/"+name]; s != nil {
				return s, nil
			}
			return nil, fmt.Errorf("secrets %q not found", name)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := p.Adopt(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	lab.mu.Lock()
	lab.statuses = map[string]corev1.PodStatus{}
	lab.mu.Unlock()
	p.NotifyPods(ctx, func(k *corev1.Pod) {
		lab.mu.Lock()
		lab.statuses[k.Name] = k.Status
		lab.mu.Unlock()
	})
	lab.p, lab.cancel = p, cancel
}

// podOf is a pod of one container running image, with restart policy.
func podOf(name, image string, policy corev1.RestartPolicy) *corev1.Pod {
	no := false
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID("uid-" + name), CreationTimestamp: metav1.Now()},
		Spec: corev1.PodSpec{AutomountServiceAccountToken: &no, RestartPolicy: policy,
			Containers: []corev1.Container{{Name: "c", Image: image}}},
	}
}

// status is the pod's status as the provider tells it now.
func (lab *providerLab) status(t *testing.T, name string) corev1.PodStatus {
	t.Helper()
	k, err := lab.p.GetPod(context.Background(), "default", name)
	if err != nil {
		t.Fatal(err)
	}
	return k.Status
}

// waitFor waits until ok holds of the pod's status.
func (lab *providerLab) waitFor(t *testing.T, name, what string, within time.Duration, ok func(corev1.PodStatus) bool) corev1.PodStatus {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		s := lab.status(t, name)
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s is not %s within %s: phase %s, container %+v", name, what, within, s.Phase, s.ContainerStatuses[0].State)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func isRunning(s corev1.PodStatus) bool {
	return s.Phase == corev1.PodRunning && s.ContainerStatuses[0].State.Running != nil && s.ContainerStatuses[0].Ready
}

func waiting(reason string) func(corev1.PodStatus) bool {
	return func(s corev1.PodStatus) bool {
		w := s.ContainerStatuses[0].State.Waiting
		return w != nil && w.Reason == reason
	}
}

func phase(want corev1.PodPhase) func(corev1.PodStatus) bool {
	return func(s corev1.PodStatus) bool { return s.Phase == want }
}

// eventsWith are the recorded events whose text has every part.
func (lab *providerLab) eventsWith(parts ...string) []string {
	for drained := false; !drained; {
		select {
		case e := <-lab.events.Events:
			lab.seen = append(lab.seen, e)
		default:
			drained = true
		}
	}
	var out []string
	for _, e := range lab.seen {
		if all(e, parts) {
			out = append(out, e)
		}
	}
	return out
}

func all(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

// Pods are created on their own: every CreatePod returns at once, a good
// pod runs while another's launch is still pulling and beside a pod whose
// image cannot be pulled (which waits, retried, with the pull's error as
// its reason and an event) and one that never boots; a pod that cannot
// run as a VM fails with the reason; a Job's pod finishes and stays
// finished; a crash-looping pod is restarted, with a back-off.
func TestProviderPodsOnTheirOwn(t *testing.T) {
	lab := newProviderLab(t)
	ctx := context.Background()
	twoContainers := podOf("two", "nginx", "")
	twoContainers.Spec.Containers = append(twoContainers.Spec.Containers, corev1.Container{Name: "side", Image: "busybox"})
	pods := []*corev1.Pod{
		podOf("slow", "slow", ""), podOf("unpull", "unpullable", ""), podOf("stall", "stall", ""),
		podOf("web", "nginx", ""), podOf("job", "exit0", corev1.RestartPolicyNever), podOf("fail", "exit3", corev1.RestartPolicyNever),
		podOf("crash", "exit3", corev1.RestartPolicyAlways), podOf("retry", "exit3", corev1.RestartPolicyOnFailure), twoContainers,
	}
	t0 := time.Now()
	for _, k := range pods {
		if err := lab.p.CreatePod(ctx, k); err != nil {
			t.Fatalf("create %s: %v", k.Name, err)
		}
	}
	if took := time.Since(t0); took > time.Second {
		t.Errorf("creating %d pods took %s: a create waits for a launch", len(pods), took)
	}
	lab.waitFor(t, "web", "running", 2*time.Second, isRunning)
	if s := lab.status(t, "slow"); s.Phase != corev1.PodPending {
		t.Errorf("slow is %s while its launch pulls", s.Phase)
	}
	s := lab.waitFor(t, "unpull", "waiting on its pull", 2*time.Second, waiting("ImagePullBackOff"))
	if !strings.Contains(s.ContainerStatuses[0].State.Waiting.Message, "manifest unknown") || s.Phase != corev1.PodPending {
		t.Errorf("unpull: %s %+v", s.Phase, s.ContainerStatuses[0].State.Waiting)
	}
	lab.waitFor(t, "two", "failed", time.Second, phase(corev1.PodFailed))
	if s := lab.status(t, "two"); s.Reason != "Unsupported" || !strings.Contains(s.Message, "container") {
		t.Errorf("two containers: %s %q", s.Reason, s.Message)
	}
	lab.waitFor(t, "job", "succeeded", 3*time.Second, phase(corev1.PodSucceeded))
	s = lab.waitFor(t, "fail", "failed", 3*time.Second, phase(corev1.PodFailed))
	if end := s.ContainerStatuses[0].State.Terminated; end == nil || end.ExitCode != 3 {
		t.Errorf("fail ended %+v", s.ContainerStatuses[0].State)
	}
	lab.waitFor(t, "slow", "running", 5*time.Second, isRunning)
	if s := lab.status(t, "stall"); s.Phase != corev1.PodPending || s.ContainerStatuses[0].State.Waiting == nil {
		t.Errorf("stall: %s %+v", s.Phase, s.ContainerStatuses[0].State)
	}
	// The crash-looping pods: the daemon restarts them until it gives up
	// (its crash loop count), then the provider does, after a back-off.
	s = lab.waitFor(t, "crash", "restarted past the daemon's crash loop", 10*time.Second, func(s corev1.PodStatus) bool {
		return lab.l.Launches(podvm.Name("default", "crash")) > 4 && s.Phase == corev1.PodRunning
	})
	// Every start after the first is a restart, the provider's own too.
	if got, launches := s.ContainerStatuses[0].RestartCount, lab.l.Launches(podvm.Name("default", "crash")); got < int32(launches)-2 {
		t.Errorf("crash: restart count %d after %d launches", got, launches)
	}
	lab.waitFor(t, "retry", "restarted past the daemon's crash loop", 10*time.Second, func(s corev1.PodStatus) bool {
		return lab.l.Launches(podvm.Name("default", "retry")) > 4 && s.Phase == corev1.PodRunning
	})
	if n := lab.l.Launches(podvm.Name("default", "unpull")); n < 3 {
		t.Errorf("the unpullable pod was tried %d times", n)
	}
	if len(lab.eventsWith("Warning Failed", "manifest unknown")) == 0 || len(lab.eventsWith("Warning BackOff")) == 0 || len(lab.eventsWith("Normal Created", "with IP 10.244.1.")) == 0 {
		t.Errorf("no event says which VM a pod got, why a pod's VM did not start or why it was restarted: %q", lab.seen)
	}
	// Finished pods stay finished: their VMs were started once.
	for _, name := range []string{"job", "fail"} {
		if n := lab.l.Launches(podvm.Name("default", name)); n != 1 {
			t.Errorf("%s was launched %d times", name, n)
		}
	}
	// Other pods' troubles never touched web.
	if n := lab.l.Launches(podvm.Name("default", "web")); n != 1 || !isRunning(lab.status(t, "web")) {
		t.Errorf("web: %d launches, %+v", n, lab.status(t, "web"))
	}
	lab.mu.Lock()
	told := len(lab.statuses)
	lab.mu.Unlock()
	if told != len(pods) {
		t.Errorf("Kubernetes was told of %d pods of %d", told, len(pods))
	}
}

// A pod's image change restarts its VM with the new image; deleting a pod
// removes its VM (its data volumes kept, or deleted when the pod says
// so), also while its launch is still pulling: no VM outlives its pod.
func TestProviderUpdateAndDelete(t *testing.T) {
	lab := newProviderLab(t)
	ctx := context.Background()
	web := podOf("web", "nginx", "")
	if err := lab.p.CreatePod(ctx, web); err != nil {
		t.Fatal(err)
	}
	lab.waitFor(t, "web", "running", 2*time.Second, isRunning)
	name := podvm.Name("default", "web")
	web2 := web.DeepCopy()
	web2.Spec.Containers[0].Image = "nginx:2"
	if err := lab.p.UpdatePod(ctx, web2); err != nil {
		t.Fatal(err)
	}
	lab.waitFor(t, "web", "running nginx:2", 3*time.Second, func(s corev1.PodStatus) bool {
		st, _ := lab.d.Status(name)
		return isRunning(s) && st.Spec != nil && st.Spec.Image == "nginx:2"
	})
	if n := lab.l.Launches(name); n != 2 {
		t.Errorf("web launched %d times over one image change", n)
	}
	// Labels alone change nothing.
	web3 := web2.DeepCopy()
	web3.Labels = map[string]string{"a": "b"}
	if err := lab.p.UpdatePod(ctx, web3); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if n := lab.l.Launches(name); n != 2 {
		t.Errorf("a label change restarted web (%d launches)", n)
	}

	keep := podOf("keep", "nginx", "")
	keep.Annotations = map[string]string{podvm.AnnotationVolumes: "data=64Mi"}
	keep.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	keep.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	drop := keep.DeepCopy()
	drop.Name, drop.UID = "drop", "uid-drop"
	drop.Annotations = map[string]string{podvm.AnnotationVolumes: "data=64Mi", podvm.AnnotationVolumePolicy: podvm.VolumesDelete}
	slow := podOf("slow", "slow", "")
	for _, k := range []*corev1.Pod{keep, drop, slow} {
		if err := lab.p.CreatePod(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	lab.waitFor(t, "keep", "running", 2*time.Second, isRunning)
	lab.waitFor(t, "drop", "running", 2*time.Second, isRunning)
	for _, k := range []*corev1.Pod{web3, keep, drop, slow} {
		if err := lab.p.DeletePod(ctx, k); err != nil {
			t.Fatalf("delete %s: %v", k.Name, err)
		}
	}
	time.Sleep(3500 * time.Millisecond) // past slow's launch
	for _, k := range []string{"web", "keep", "drop", "slow"} {
		vm := podvm.Name("default", k)
		if _, ok := lab.d.Status(vm); ok || lab.l.Running(vm) {
			t.Errorf("pod %s's VM outlived the pod", k)
		}
		if _, err := lab.p.GetPod(ctx, "default", k); err == nil {
			t.Errorf("pod %s is still on the node", k)
		}
	}
	dir := state.Dir{Root: lab.env.StateDir}
	if _, err := os.Stat(dir.VMDir(podvm.Name("default", "keep"))); err != nil {
		t.Errorf("keep's volumes were not kept: %v", err)
	}
	if _, err := os.Stat(dir.VMDir(podvm.Name("default", "drop"))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("drop's volumes were kept: %v", err)
	}
}

// A restarted provider adopts its pods (no VM is launched again, a
// finished pod stays finished), and so does a provider whose daemon
// restarted under it: the event stream comes back, the host's file is
// applied again, and nothing is started twice.
func TestProviderRestarts(t *testing.T) {
	lab := newProviderLab(t)
	ctx := context.Background()
	for _, k := range []*corev1.Pod{podOf("web", "nginx", ""), podOf("job", "exit0", corev1.RestartPolicyOnFailure), podOf("crash", "exit3", "")} {
		if err := lab.p.CreatePod(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	lab.waitFor(t, "web", "running", 2*time.Second, isRunning)
	lab.waitFor(t, "job", "succeeded", 3*time.Second, phase(corev1.PodSucceeded))
	web, job := podvm.Name("default", "web"), podvm.Name("default", "job")
	check := func(when string) {
		t.Helper()
		lab.waitFor(t, "web", "running "+when, 3*time.Second, isRunning)
		if s := lab.status(t, "job"); s.Phase != corev1.PodSucceeded {
			t.Errorf("%s: job is %s", when, s.Phase)
		}
		time.Sleep(500 * time.Millisecond)
		if lab.l.Launches(web) != 1 || lab.l.Launches(job) != 1 {
			t.Errorf("%s: web launched %d times, job %d", when, lab.l.Launches(web), lab.l.Launches(job))
		}
	}

	lab.cancel()
	lab.startProvider(t)
	check("after the provider's restart")

	restarts := func() int32 { return lab.status(t, "crash").ContainerStatuses[0].RestartCount }
	lab.waitFor(t, "crash", "restarted twice", 5*time.Second, func(corev1.PodStatus) bool { return restarts() >= 2 })
	before := restarts()
	lab.stopDaemon()
	time.Sleep(500 * time.Millisecond) // the provider polls a daemon that is gone
	lab.startDaemon(t)
	check("after the daemon's restart")
	// The daemon counts the crash pod's restarts from 0 again; the pod's
	// count never goes back.
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if n := restarts(); n < before {
			t.Fatalf("the crash pod's restart count went back from %d to %d", before, n)
		}
	}
	if s, ok := lab.d.Status(web); !ok || s.State != apitypes.Running {
		t.Errorf("the restarted daemon has web as %+v", s)
	}
	// The restarted provider still creates pods.
	if err := lab.p.CreatePod(ctx, podOf("late", "nginx", "")); err != nil {
		t.Fatal(err)
	}
	lab.waitFor(t, "late", "running", 2*time.Second, isRunning)
}

// A pod's imagePullSecrets reach its VM as registry logins encrypted to
// the host: the daemon's entry for the VM and the provider's record hold
// the age ciphertext, which the host's identity opens to the secret's
// password, and never the password. A secret that is missing or not a
// pull secret is a warning event, as a kubelet's, and the pod runs.
func TestProviderPullSecrets(t *testing.T) {
	lab := newProviderLab(t)
	const password = "pull-s3cret"
	auth := base64.StdEncoding.EncodeToString([]byte("puller:" + password))
	lab.secrets["default/regcred"] = &corev1.Secret{Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"https://r.test:5000/v1/":{"auth":"` + auth + `"}}}`)}}
	lab.secrets["default/opaque"] = &corev1.Secret{Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"a": []byte("b")}}
	k := podOf("private", "nginx", "")
	k.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "regcred"}, {Name: "missing"}, {Name: "opaque"}}
	if err := lab.p.CreatePod(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	lab.waitFor(t, "private", "running", 3*time.Second, isRunning)

	name := podvm.Name("default", "private")
	entries, err := state.Dir{Root: lab.env.StateDir}.APIVMs()
	if err != nil {
		t.Fatal(err)
	}
	rec, err := os.ReadFile(filepath.Join(filepath.Dir(lab.socket), "pods", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	for what, data := range map[string][]byte{"the daemon's entry": entries[name], "the provider's record": rec} {
		if strings.Contains(string(data), password) || !strings.Contains(string(data), "AGE ENCRYPTED") {
			t.Errorf("%s holds the password in the clear, or no encrypted login:\n%s", what, data)
		}
	}
	var spec config.VMSpec
	if err := yaml.Unmarshal(entries[name], &spec); err != nil {
		t.Fatal(err)
	}
	login, ok := spec.Registries["r.test:5000"]
	if !ok || login.Username != "puller" {
		t.Fatalf("the VM's registries = %+v, want puller's login for r.test:5000", spec.Registries)
	}
	if pw, err := secrets.Decrypt(login.Password, lab.env.Identities); err != nil || string(pw) != password {
		t.Errorf("the host's identity opens the login to %q (%v), want the secret's password", pw, err)
	}
	for _, want := range []string{`imagePullSecret "missing": secrets "missing" not found`, `imagePullSecret "opaque": type Opaque is not a pull secret`} {
		if len(lab.eventsWith("Warning FailedToRetrieveImagePullSecret", want)) == 0 {
			t.Errorf("no warning event says %q: %q", want, lab.seen)
		}
	}
}
