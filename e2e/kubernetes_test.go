package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/kubelet"
	"microvm.dev/microvm/internal/podvm"
	"microvm.dev/microvm/internal/testutil"
)

// kubeHost is one host of TestKubernetes: a daemon in its namespace and
// microvm-kubelet registering it as a node.
type kubeHost struct {
	t        *testing.T
	lab      *daemonLab
	node     string
	cidr     string
	lanIP    string
	port     int
	bin      string
	args     []string
	provider *exec.Cmd
}

// start starts the host's provider (again).
func (h *kubeHost) start() {
	h.t.Helper()
	cmd := exec.Command(h.bin, h.args...)
	logf, err := os.OpenFile(filepath.Join(h.lab.state, "kubelet.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		h.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	logf.Close()
	h.provider = cmd
}

// kill kills the provider outright, as a crash would.
func (h *kubeHost) kill() {
	if h.provider != nil && h.provider.Process != nil {
		h.provider.Process.Kill()
		h.provider.Wait()
		h.provider = nil
	}
}

func (h *kubeHost) log() string {
	b, _ := os.ReadFile(filepath.Join(h.lab.state, "kubelet.log"))
	return string(b)
}

// podVMs are the daemon's VMs that are pods'.
func (h *kubeHost) podVMs() map[string]apitypes.VMStatus {
	out := map[string]apitypes.VMStatus{}
	for name, st := range h.lab.list() {
		if len(name) == 12 && name[0] == 'k' {
			out[name] = st
		}
	}
	return out
}

// buildKubelet builds microvm-kubelet into the e2e binaries' directory.
func buildKubelet(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(shared.initDir, "microvm-kubelet")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, "microvm.dev/microvm/cmd/microvm-kubelet")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build microvm-kubelet: %v\n%s", err, out)
	}
	return bin
}

// webPod is a pod of the nginx image made from Debian's packages, kept
// off any node that runs another (anti-affinity), tolerating microvm's
// taint, with a data volume at /data.
func webPod(name, image string) *corev1.Pod {
	no := false
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "web"},
			Annotations: map[string]string{podvm.AnnotationVolumes: "data=64Mi"}},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken: &no,
			Tolerations:                  []corev1.Toleration{{Key: kubelet.TaintKey, Operator: corev1.TolerationOpEqual, Value: "microvm", Effect: corev1.TaintEffectNoSchedule}},
			Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
				RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
					LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
					TopologyKey:   "kubernetes.io/hostname",
				}},
			}},
			Containers: []corev1.Container{{
				Name: "web", Image: image,
				// A container's command and args, as a user's pod writes
				// them to wrap an image's entrypoint.
				Command: []string{"/bin/sh", "-c"},
				Args:    []string{`echo "$GREETING" > /tmp/greeting; exec nginx -g 'daemon off;'`},
				Env:     []corev1.EnvVar{{Name: "GREETING", Value: "from-the-pod"}},
				Ports:   []corev1.ContainerPort{{ContainerPort: 80}},
				Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{
					corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("384Mi"),
				}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt32(80)}}, PeriodSeconds: 2},
				VolumeMounts:   []corev1.VolumeMount{{Name: "data", MountPath: "/data"}},
			}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		},
	}
}

// Kubernetes places micro-VMs on two microvm hosts: a real kube-apiserver
// with etcd and kube-scheduler (built from their own modules by
// tools/kube), two daemons in two namespaces joined by a LAN, each host
// registered by microvm-kubelet (virtual-kubelet) with the RBAC of
// dist/kubernetes. Two pods of Debian's nginx from a real registry land on
// different hosts by anti-affinity and boot as VMs under TCG; a pod's VM
// answers from the other host's namespace; kubectl logs and exec reach
// the VMs; a pod that cannot be a VM is refused with an event; a killed
// provider leaves its VM running and the restarted one adopts it; a pod
// deleted while its provider is down goes with its VM once it is back;
// a data volume outlives its pod; a pod pulls from a registry with logins
// with its imagePullSecret, and without it is refused by the registry.
func TestKubernetes(t *testing.T) {
	k, cs, bin, nginx := kubeWithNginx(t)
	kubectl := func(args ...string) string {
		t.Helper()
		out, err := k.Kubectl(args...)
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	ctx := context.Background()

	hosts := map[string]*kubeHost{}
	_, ageKey := ageIdentity(t)
	for i, name := range []string{"host-a", "host-b"} {
		l := newDaemonLab(t, "k8"+name[5:])
		h := &kubeHost{t: t, lab: l, node: name, cidr: fmt.Sprintf("10.244.%d.0/24", i+1), lanIP: fmt.Sprintf("172.31.9.%d", i+1), port: testutil.FreePort(t), bin: bin}
		hosts[name] = h
		l.startDaemon("", "--age-identity", ageKey)
		t.Cleanup(func() {
			h.kill()
			if t.Failed() {
				t.Logf("%s's provider log (end):\n%s", name, tail(h.log(), 40))
			}
		})
	}
	a, b := hosts["host-a"], hosts["host-b"]
	testutil.Veth(t, a.lab.ns, "lan0", b.lab.ns, "lan0")
	for _, p := range [][2]*kubeHost{{a, b}, {b, a}} {
		h, other := p[0], p[1]
		h.lab.ns.IP(t, "addr", "add", h.lanIP+"/24", "dev", "lan0")
		h.lab.ns.IP(t, "link", "set", "lan0", "up")
		// Each host routes the other's pod CIDR to it (docs/kubernetes.md).
		h.lab.ns.IP(t, "route", "add", other.cidr, "via", other.lanIP)
		base := h.lab.writeFile("host: { externalInterface: lan0 }\ndefaults: { stopTimeout: 20s }\nvms: {}\n")
		h.args = h.lab.args("--kubeconfig", k.Kubeconfig(t, "microvm-kubelet-"+h.node, "microvm:kubelets"),
			"--node", h.node, "--node-ip", "127.0.0.1", "--listen", "127.0.0.1:"+strconv.Itoa(h.port),
			"--pod-cidr", h.cidr, "--config", base, "--client-ca-file", k.CA)
		h.start()
	}

	// Both nodes register, ready, tainted, with their capacity and labels,
	// and each routes the other's pods.
	waitK8s(t, "both nodes ready with their pod routes", 2*time.Minute, func() (bool, string) {
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		ready := 0
		var seen []string
		for _, n := range nodes.Items {
			cond := map[corev1.NodeConditionType]corev1.ConditionStatus{}
			for _, c := range n.Status.Conditions {
				cond[c.Type] = c.Status
			}
			seen = append(seen, fmt.Sprintf("%s %v", n.Name, cond))
			if cond[corev1.NodeReady] == corev1.ConditionTrue && cond[kubelet.ConditionPodRoutes] == corev1.ConditionTrue {
				ready++
			}
		}
		return ready == 2, strings.Join(seen, "; ")
	})
	na, err := cs.CoreV1().Nodes().Get(ctx, "host-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(na.Spec.Taints) == 0 || na.Spec.Taints[0].Key != kubelet.TaintKey || na.Labels["kubernetes.io/arch"] != runtime.GOARCH ||
		na.Labels[kubelet.LabelHypervisorPrefix+"qemu"] != "true" || na.Status.Capacity.Cpu().Value() != int64(runtime.NumCPU()) ||
		na.Status.Capacity.Memory().Value() <= 0 || na.Status.Capacity.Pods().Value() != 32 {
		t.Errorf("host-a's node: taints %v, labels %v, capacity %v", na.Spec.Taints, na.Labels, na.Status.Capacity)
	}

	// A pod that cannot be a VM is refused with an event, and no VM is made.
	bad := webPod("two-containers", nginx)
	bad.Spec.Affinity = nil
	bad.Spec.Containers = append(bad.Spec.Containers, corev1.Container{Name: "sidecar", Image: nginx})
	if _, err := cs.CoreV1().Pods("default").Create(ctx, bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Two web pods: the scheduler puts them on different hosts.
	for _, name := range []string{"web-1", "web-2"} {
		if _, err := cs.CoreV1().Pods("default").Create(ctx, webPod(name, nginx), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pods := map[string]*corev1.Pod{}
	waitK8s(t, "web-1 and web-2 running and ready", 6*time.Minute, func() (bool, string) {
		var states []string
		ok := true
		for _, name := range []string{"web-1", "web-2"} {
			p, err := cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			pods[name] = p
			states = append(states, fmt.Sprintf("%s on %q: %s ready=%v ip=%s %s", name, p.Spec.NodeName, p.Status.Phase, podReady(p), p.Status.PodIP, p.Status.Message))
			ok = ok && p.Status.Phase == corev1.PodRunning && podReady(p)
		}
		return ok, strings.Join(states, "; ")
	})
	if pods["web-1"].Spec.NodeName == pods["web-2"].Spec.NodeName {
		t.Fatalf("anti-affinity: both pods on %s", pods["web-1"].Spec.NodeName)
	}
	byHost := map[string]*corev1.Pod{}
	for _, p := range pods {
		byHost[p.Spec.NodeName] = p
		h := hosts[p.Spec.NodeName]
		if !strings.HasPrefix(p.Status.PodIP, strings.TrimSuffix(h.cidr, "0/24")) {
			t.Errorf("%s's IP %s is not in %s's pod CIDR %s", p.Name, p.Status.PodIP, h.node, h.cidr)
		}
		if vms := h.podVMs(); len(vms) != 1 || vms[podvm.Name("default", p.Name)].State != apitypes.Running {
			t.Errorf("%s's VMs: %v", h.node, vms)
		}
	}
	pa := byHost["host-a"]

	refused, err := cs.CoreV1().Pods("default").Get(ctx, "two-containers", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if refused.Status.Phase != corev1.PodFailed || !strings.Contains(refused.Status.Message, "2 containers") {
		t.Errorf("the two-container pod: %s %q", refused.Status.Phase, refused.Status.Message)
	}
	if out := kubectl("get", "events", "--field-selector", "involvedObject.name=two-containers", "-o", "custom-columns=R:.reason,M:.message"); !strings.Contains(out, "Unsupported") || !strings.Contains(out, "a micro-VM runs one") {
		t.Errorf("no Unsupported event on the two-container pod:\n%s", out)
	}
	for _, h := range hosts {
		if _, ok := h.podVMs()[podvm.Name("default", "two-containers")]; ok {
			t.Errorf("a VM was made on %s for the refused pod", h.node)
		}
	}

	// host-a's pod answers on its port from host-b's namespace, through
	// host-b's route to host-a's pod CIDR.
	if got := httpGet(t, b.lab.ns, pa.Status.PodIP+":80"); !strings.Contains(got, "Welcome to nginx") {
		t.Errorf("GET / on %s (%s) from host-b = %q", pa.Name, pa.Status.PodIP, got)
	}

	// kubectl exec: over SSH, the pod's environment, its data volume, the
	// exit status; kubectl logs: the VM's console.
	out := kubectl("exec", pa.Name, "--", "sh", "-c", "cat /tmp/greeting; echo kept > /data/mark; nproc; awk '/MemTotal/{print $2}' /proc/meminfo")
	var greeting string
	var cpus, memKB int
	if _, err := fmt.Sscan(out, &greeting, &cpus, &memKB); err != nil || greeting != "from-the-pod" || cpus != 1 || memKB < 300<<10 || memKB > 384<<10 {
		t.Errorf("kubectl exec in %s: %q (want the pod's env, 1 CPU and 384Mi from its limits)", pa.Name, out)
	}
	if out, err := k.Kubectl("exec", pa.Name, "--", "sh", "-c", "exit 3"); err == nil || !strings.Contains(out, "exit code 3") {
		t.Errorf("kubectl exec's exit status: %v %q", err, out)
	}
	if out := kubectl("logs", pa.Name, "--tail", "200"); !strings.Contains(out, "microvm") {
		t.Errorf("kubectl logs %s shows no console:\n%s", pa.Name, out)
	}
	if got := portForward(t, k, pa.Name, 80); !strings.Contains(got, "Welcome to nginx") {
		t.Errorf("GET / through kubectl port-forward to %s = %q", pa.Name, got)
	}

	// host-a's provider is killed: the VM runs on, and the restarted
	// provider adopts it (no second VM, the same hypervisor process).
	vmName := podvm.Name("default", pa.Name)
	before := a.podVMs()[vmName]
	a.kill()
	time.Sleep(3 * time.Second)
	if st := a.podVMs()[vmName]; st.State != apitypes.Running || st.PID != before.PID {
		t.Fatalf("the VM did not run on without its provider: %+v", st)
	}
	a.start()
	time.Sleep(10 * time.Second)
	waitK8s(t, "the adopted pod ready", 2*time.Minute, func() (bool, string) {
		p, err := cs.CoreV1().Pods("default").Get(ctx, pa.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return p.Status.Phase == corev1.PodRunning && podReady(p), string(p.Status.Phase)
	})
	if vms := a.podVMs(); len(vms) != 1 || vms[vmName].PID != before.PID || vms[vmName].Restarts != 0 {
		t.Errorf("after the provider's restart, host-a's VMs: %+v (before: pid %d)", vms, before.PID)
	}
	// It knows every pod it held again: the web pod, and the refused one
	// if the scheduler put it here.
	held := 1
	if refused.Spec.NodeName == "host-a" {
		held++
	}
	if !strings.Contains(a.log(), fmt.Sprintf("adopted=%d", held)) {
		t.Errorf("the restarted provider did not adopt its %d recorded pods:\n%s", held, tail(a.log(), 20))
	}

	// A pod force-deleted while its provider is down (gone from the API at
	// once) goes with its VM once the provider is back; its data volume
	// stays (the policy is retain).
	a.kill()
	now := int64(0)
	if err := cs.CoreV1().Pods("default").Delete(ctx, pa.Name, metav1.DeleteOptions{GracePeriodSeconds: &now}); err != nil {
		t.Fatal(err)
	}
	a.start()
	waitK8s(t, pa.Name+" gone with its VM", 2*time.Minute, func() (bool, string) {
		_, err := cs.CoreV1().Pods("default").Get(ctx, pa.Name, metav1.GetOptions{})
		vms := a.podVMs()
		return err != nil && len(vms) == 0, fmt.Sprintf("pod: %v; VMs %v", err, vms)
	})
	if _, err := os.Stat(filepath.Join(a.lab.state, "vms", vmName, "data.img")); err != nil {
		t.Errorf("the deleted pod's data volume: %v", err)
	}

	// The pod made again under its name on the same host finds /data. It
	// names a RuntimeClass of dist/kubernetes instead of tolerating the
	// taint itself: the RuntimeClass adds the toleration and the
	// hypervisor's node selector.
	again := webPod(pa.Name, nginx)
	again.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": "host-a"}
	again.Spec.Tolerations = nil
	rc := "microvm-qemu"
	again.Spec.RuntimeClassName = &rc
	if _, err := cs.CoreV1().Pods("default").Create(ctx, again, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitK8s(t, pa.Name+" running again", 4*time.Minute, func() (bool, string) {
		p, err := cs.CoreV1().Pods("default").Get(ctx, pa.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return p.Status.Phase == corev1.PodRunning, string(p.Status.Phase) + " " + p.Status.Message
	})
	if out := kubectl("exec", pa.Name, "--", "cat", "/data/mark"); out != "kept\n" {
		t.Errorf("the data volume after the pod came back: %q", out)
	}

	// Deleting a pod stops its VM; with its volume policy changed to
	// delete (an annotation a running pod may change), its data volume
	// goes too.
	pb := byHost["host-b"]
	kubectl("annotate", "pod", pb.Name, podvm.AnnotationVolumePolicy+"="+podvm.VolumesDelete)
	time.Sleep(3 * time.Second)
	if err := cs.CoreV1().Pods("default").Delete(ctx, pb.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitK8s(t, pb.Name+" deleted with its VM", 2*time.Minute, func() (bool, string) {
		_, err := cs.CoreV1().Pods("default").Get(ctx, pb.Name, metav1.GetOptions{})
		vms := b.podVMs()
		return err != nil && len(vms) == 0, fmt.Sprintf("pod: %v; VMs %v", err, vms)
	})
	if _, err := os.Stat(filepath.Join(b.lab.state, "vms", podvm.Name("default", pb.Name), "data.img")); !os.IsNotExist(err) {
		t.Errorf("the data volume of a pod deleted with policy delete: %v", err)
	}

	pullSecrets(t, cs, b)
}

// pullSecrets: a pod whose image is in a registry with htpasswd logins
// pulls it with its imagePullSecret (a kubernetes.io/dockerconfigjson
// Secret), whose password reaches the daemon only age-encrypted to the
// host; the same pod without the secret waits in ImagePullBackOff with
// the registry's 401.
func pullSecrets(t *testing.T, cs *kubernetes.Clientset, h *kubeHost) {
	t.Helper()
	ctx := context.Background()
	password := "pw-" + randomToken(t)
	reg := startRegistryWithLogin(t, "puller", password)
	ref := reg.push(t, "private/app:1", v1.Config{Entrypoint: []string{"/bin/sh", "-c", "exec sleep 86400"}},
		baseLayer(t), filesLayer(t, map[string]string{"etc/image": "private\n"}))
	auth := base64.StdEncoding.EncodeToString([]byte("puller:" + password))
	if _, err := cs.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "regcred"}, Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"` + reg.addr + `":{"auth":"` + auth + `"}}}`)},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := func(name string, secrets ...string) *corev1.Pod {
		no := false
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{
			AutomountServiceAccountToken: &no, NodeSelector: map[string]string{"kubernetes.io/hostname": h.node},
			Tolerations: []corev1.Toleration{{Key: kubelet.TaintKey, Operator: corev1.TolerationOpEqual, Value: "microvm", Effect: corev1.TaintEffectNoSchedule}},
			Containers:  []corev1.Container{{Name: "app", Image: ref}},
		}}
		for _, s := range secrets {
			p.Spec.ImagePullSecrets = append(p.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: s})
		}
		return p
	}
	for _, p := range []*corev1.Pod{pod("private", "regcred"), pod("no-login")} {
		if _, err := cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitK8s(t, "private running, no-login refused by the registry", 4*time.Minute, func() (bool, string) {
		var states []string
		ok := true
		for name, want := range map[string]string{"private": "running", "no-login": "UNAUTHORIZED"} {
			p, err := cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			got := string(p.Status.Phase)
			if cs := p.Status.ContainerStatuses; len(cs) == 1 && cs[0].State.Running != nil {
				got = "running"
			} else if len(cs) == 1 && cs[0].State.Waiting != nil {
				got = cs[0].State.Waiting.Reason + ": " + cs[0].State.Waiting.Message
			}
			states = append(states, name+": "+got)
			ok = ok && strings.Contains(got, want)
		}
		return ok, strings.Join(states, "; ")
	})
	vm := podvm.Name("default", "private")
	if out, err := h.lab.cli("exec", vm, "--", "cat", "/etc/image"); err != nil || strings.TrimSpace(out) != "private" {
		t.Errorf("the private pod's /etc/image = %q (%v)", out, err)
	}
	entry := mustRead(t, filepath.Join(h.lab.state, "api-vms", vm+".yaml"))
	if strings.Contains(string(entry), password) || !strings.Contains(string(entry), "AGE ENCRYPTED") {
		t.Errorf("the daemon's entry for the private pod's VM holds the password in the clear, or no login:\n%s", entry)
	}
}

// kubeWithNginx is what the Kubernetes tests share: a real control plane
// (tools/kube) with the RBAC and RuntimeClasses of dist/kubernetes,
// microvm-kubelet built, and Debian's nginx pushed to a registry of the
// test's (the reference it returns).
func kubeWithNginx(t *testing.T) (*testutil.Kube, *kubernetes.Clientset, string, string) {
	t.Helper()
	requireGuestEnv(t)
	tools := testutil.KubeBinaries(t)
	bin := buildKubelet(t)
	root := debianRoot(t, "nginx-light,procps")
	reg := startRegistry(t)
	nginx := reg.push(t, "debian/nginx:1", v1.Config{
		Entrypoint: []string{"nginx"}, Cmd: []string{"-g", "daemon off;"}, StopSignal: "SIGQUIT",
		Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
	}, fileLayer(t, root))
	k := testutil.StartKube(t, tools)
	if out, err := k.Kubectl("apply", "-f", "../dist/kubernetes/rbac.yaml", "-f", "../dist/kubernetes/runtimeclasses.yaml"); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", k.Admin)
	if err != nil {
		t.Fatal(err)
	}
	return k, kubernetes.NewForConfigOrDie(cfg), bin, nginx
}

// portForward runs kubectl port-forward to port of pod and GETs / through it.
func portForward(t *testing.T, k *testutil.Kube, pod string, port int) string {
	t.Helper()
	local := testutil.FreePort(t)
	cmd := exec.Command(k.Tools.Kubectl, "--kubeconfig", k.Admin, "port-forward", "pod/"+pod, fmt.Sprintf("%d:%d", local, port))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("kubectl port-forward's errors:\n%s", stderr.String())
		}
	}()
	line, _ := bufio.NewReader(out).ReadString('\n')
	if !strings.Contains(line, "Forwarding from") {
		t.Fatalf("kubectl port-forward: %q", line)
	}
	return httpGet(t, hostNS{}, "127.0.0.1:"+strconv.Itoa(local))
}

// hostNS runs in the test's own namespace.
type hostNS struct{}

func (hostNS) Do(_ testing.TB, fn func()) { fn() }

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitK8s polls ok until it holds or timeout passes.
func waitK8s(t *testing.T, what string, timeout time.Duration, ok func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		done, state := ok()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s: %s", what, timeout, state)
		}
		time.Sleep(time.Second)
	}
}
