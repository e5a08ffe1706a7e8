package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/kubelet"
	"microvm.dev/microvm/internal/podvm"
	"microvm.dev/microvm/internal/testutil"
)

// smallPod is a pod spec of one small container of image (160Mi; 100m of
// CPU, which the node's two CPUs hold twelve of and the VM rounds up to one
// vCPU) tolerating microvm's taint, with a readiness probe on probePort
// (none when 0).
func smallPod(image string, command []string, policy corev1.RestartPolicy, probePort int32) corev1.PodSpec {
	no := false
	c := corev1.Container{
		Name: "main", Image: image, Command: command,
		Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("160Mi"),
		}},
	}
	if probePort != 0 {
		c.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt32(probePort)}}, PeriodSeconds: 2}
	}
	return corev1.PodSpec{
		AutomountServiceAccountToken: &no, RestartPolicy: policy,
		Tolerations: []corev1.Toleration{{Key: kubelet.TaintKey, Operator: corev1.TolerationOpEqual, Value: "microvm", Effect: corev1.TaintEffectNoSchedule}},
		Containers:  []corev1.Container{c},
	}
}

// One node holds a real node's load: on a real control plane, with a
// crash-looping pod, a pod whose image cannot be pulled and a pod that
// never becomes ready already on the node, a Deployment of 8 replicas
// (each with a data volume) and a Job created together all come up: the
// Deployment becomes available, the Job completes. The Job's pod stays
// Succeeded, its VM stopped, through a scale-up to 10, a restart of the
// provider and a restart of the daemon; the troubled pods keep their own
// reasons; deleting the Deployment removes every one of its VMs and keeps
// their data volumes (policy retain). A Service over the Deployment, through
// Kubernetes' own kube-proxy beside the provider, answers on its ClusterIP
// from the host and from another pod, which cannot reach the same pods on
// their own addresses. Times are logged (bench/ measures them against
// microvm apply).
func TestKubernetesNodeScale(t *testing.T) {
	k, cs, bin, nginx := kubeWithNginx(t)
	missing := strings.Replace(nginx, "debian/nginx:1", "debian/missing:1", 1)
	ctx := context.Background()
	pods := cs.CoreV1().Pods("default")

	l := newDaemonLab(t, "k8sc")
	l.ns.IP(t, "link", "add", "lan0", "type", "bridge")
	l.ns.IP(t, "addr", "add", "172.31.9.1/24", "dev", "lan0")
	l.ns.IP(t, "link", "set", "lan0", "up")
	// The host reaches ClusterIPs by a route to the Service range, as a
	// host's default route would take them.
	l.ns.IP(t, "route", "add", testutil.ServiceCIDR, "dev", "lan0")
	l.startDaemon("")
	h := &kubeHost{t: t, lab: l, node: "node-1", cidr: "10.244.1.0/24", port: testutil.FreePort(t), bin: bin}
	base := l.writeFile("host: { externalInterface: lan0, serviceCIDRs: [" + testutil.ServiceCIDR + "] }\ndefaults: { stopTimeout: 20s }\nvms: {}\n")
	h.args = l.args("--kubeconfig", k.Kubeconfig(t, "microvm-kubelet-"+h.node, "microvm:kubelets"),
		"--node", h.node, "--node-ip", "127.0.0.1", "--listen", "127.0.0.1:"+strconv.Itoa(h.port),
		"--pod-cidr", h.cidr, "--config", base, "--client-ca-file", k.CA)
	h.start()
	t.Cleanup(func() {
		h.kill()
		if t.Failed() {
			t.Logf("the provider's log (end):\n%s", tail(h.log(), 60))
		}
	})
	get := func(name string) *corev1.Pod {
		t.Helper()
		p, err := pods.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("pod %s: %v", name, err)
		}
		return p
	}
	waiting := func(p *corev1.Pod) string {
		if len(p.Status.ContainerStatuses) == 0 || p.Status.ContainerStatuses[0].State.Waiting == nil {
			return ""
		}
		return p.Status.ContainerStatuses[0].State.Waiting.Reason
	}

	// The troubled pods come first and settle into their states.
	troubled := map[string]corev1.PodSpec{
		"crash":       smallPod(nginx, []string{"/bin/sh", "-c", "echo crashing; exit 1"}, corev1.RestartPolicyAlways, 0),
		"unpullable":  smallPod(missing, nil, corev1.RestartPolicyAlways, 0),
		"never-ready": smallPod(nginx, nil, corev1.RestartPolicyAlways, 81),
	}
	for name, spec := range troubled {
		if _, err := pods.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	troubledOK := func() (bool, string) {
		c, u, n := get("crash"), get("unpullable"), get("never-ready")
		state := fmt.Sprintf("crash %s restarts=%d %s; unpullable %s %s; never-ready %s ready=%v", c.Status.Phase, restarts(c), waiting(c), u.Status.Phase, waiting(u), n.Status.Phase, podReady(n))
		return restarts(c) > 0 && waiting(u) == "ImagePullBackOff" && u.Status.Phase == corev1.PodPending &&
			n.Status.Phase == corev1.PodRunning && !podReady(n), state
	}
	waitK8s(t, "the troubled pods in their states", 6*time.Minute, troubledOK)
	proxyConfig, err := os.ReadFile("../dist/kubernetes/kube-proxy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	k.StartProxy(t, l.ns, h.node, string(proxyConfig))

	// The Deployment and the Job, together.
	replicas := int32(8)
	web := smallPod(nginx, nil, corev1.RestartPolicyAlways, 80)
	web.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	web.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}, Annotations: map[string]string{podvm.AnnotationVolumes: "data=32Mi"}}, Spec: web},
		},
	}
	zero := int32(0)
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "once"},
		Spec: batchv1.JobSpec{BackoffLimit: &zero, Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "once"}},
			Spec:       smallPod(nginx, []string{"/bin/sh", "-c", "echo the-job-ran"}, corev1.RestartPolicyNever, 0),
		}},
	}
	t0 := time.Now()
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.BatchV1().Jobs("default").Create(ctx, job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	available := func(n int32) func() (bool, string) {
		return func() (bool, string) {
			d, err := cs.AppsV1().Deployments("default").Get(ctx, "web", metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			return d.Status.AvailableReplicas == n && d.Status.Replicas == n, fmt.Sprintf("%d of %d available", d.Status.AvailableReplicas, n)
		}
	}
	jobDone := func() (bool, string) {
		j, err := cs.BatchV1().Jobs("default").Get(ctx, "once", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return j.Status.Succeeded == 1, fmt.Sprintf("succeeded %d failed %d active %d", j.Status.Succeeded, j.Status.Failed, j.Status.Active)
	}
	waitK8s(t, "the Deployment available", 10*time.Minute, available(8))
	t.Logf("8 replicas available %.0f s after the Deployment was created, beside 3 troubled pods and a Job", time.Since(t0).Seconds())
	waitK8s(t, "the Job complete", 3*time.Minute, jobDone)
	clusterIP := webService(t, cs, l, k)
	jobPod := func() *corev1.Pod {
		t.Helper()
		list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: "app=once"})
		if err != nil || len(list.Items) != 1 {
			t.Fatalf("the Job's pods: %v %v", err, list)
		}
		return &list.Items[0]
	}
	jp := jobPod()
	jobVM := podvm.Name("default", jp.Name)
	if out, err := l.cli("logs", jobVM); err != nil || !strings.Contains(out, "the-job-ran") {
		t.Errorf("the Job's console: %v\n%s", err, tail(out, 10))
	}
	if vms := h.podVMs(); len(vms) < 12 {
		t.Errorf("the node holds %d pods' VMs, want 12: %v", len(vms), names(vms))
	}

	// The finished Job stays finished through a scale-up and restarts.
	finished := func(when string) {
		t.Helper()
		p := get(jp.Name)
		if p.Status.Phase != corev1.PodSucceeded {
			t.Errorf("%s: the Job's pod is %s", when, p.Status.Phase)
		}
		if st := h.podVMs()[jobVM]; st.State == apitypes.Running || st.State == apitypes.Starting {
			t.Errorf("%s: the Job's VM is %s", when, st.State)
		}
		if ok, state := troubledOK(); !ok {
			t.Errorf("%s: %s", when, state)
		}
	}
	d, err := cs.AppsV1().Deployments("default").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ten := int32(10)
	d.Spec.Replicas = &ten
	if _, err := cs.AppsV1().Deployments("default").Update(ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitK8s(t, "10 replicas available", 6*time.Minute, available(10))
	finished("after the scale-up")

	h.kill()
	h.start()
	time.Sleep(10 * time.Second)
	waitK8s(t, "10 replicas after the provider's restart", 3*time.Minute, available(10))
	finished("after the provider's restart")

	l.daemon.Process.Kill()
	l.daemon.Wait()
	l.startDaemon("")
	time.Sleep(10 * time.Second)
	waitK8s(t, "10 replicas after the daemon's restart", 3*time.Minute, available(10))
	finished("after the daemon's restart")
	if got := waitHTTP(t, l.ns, clusterIP+":80", time.Minute); !strings.Contains(got, "Welcome to nginx") {
		t.Errorf("the Service from the host after the daemon's restart: %q", got)
	}

	// Deleting the Deployment removes every one of its VMs; their data
	// volumes stay.
	webVMs := map[string]bool{}
	list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	// The volumes to keep: those of the replicas whose VMs made them (a
	// pod the ReplicaSet replaced meanwhile may never have had a VM).
	kept := map[string]string{}
	for _, p := range list.Items {
		name := podvm.Name("default", p.Name)
		webVMs[name] = true
		vol := filepath.Join(l.state, "vms", name, "data.img")
		if _, err := os.Stat(vol); err == nil {
			kept[name] = vol
		} else {
			t.Logf("pod %s (%s) has no data volume: %v", p.Name, p.Status.Phase, err)
		}
	}
	if len(kept) < 10 {
		t.Errorf("%d of the 10 replicas have a data volume", len(kept))
	}
	if err := cs.AppsV1().Deployments("default").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	t1 := time.Now()
	waitK8s(t, "the Deployment's pods and VMs gone", 4*time.Minute, func() (bool, string) {
		list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return false, err.Error()
		}
		var left []string
		for name := range h.podVMs() {
			if webVMs[name] {
				left = append(left, name)
			}
		}
		return len(list.Items) == 0 && len(left) == 0, fmt.Sprintf("%d pods, VMs left %v", len(list.Items), left)
	})
	t.Logf("the Deployment's %d VMs removed %.0f s after its deletion", len(webVMs), time.Since(t1).Seconds())
	for _, vol := range kept {
		if _, err := os.Stat(vol); err != nil {
			t.Errorf("a deleted replica's data volume: %v", err)
		}
	}
	finished("after the Deployment's deletion")
}

// webService puts a Service over the Deployment's pods (app=web, port 80)
// and checks that its ClusterIP answers from the host and from the pod
// never-ready, and that never-ready cannot reach a web pod on its own
// address: the firewall lets through only what kube-proxy sent on. It
// returns the ClusterIP.
func webService(t *testing.T, cs *kubernetes.Clientset, l *daemonLab, k *testutil.Kube) string {
	t.Helper()
	ctx := context.Background()
	svc, err := cs.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(80)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ip := svc.Spec.ClusterIP
	t0 := time.Now()
	if got := waitHTTP(t, l.ns, ip+":80", 2*time.Minute); !strings.Contains(got, "Welcome to nginx") {
		t.Errorf("the Service %s from the host: %q", ip, got)
	}
	t.Logf("the Service %s answered the host %.1f s after it was created", ip, time.Since(t0).Seconds())
	fetch := func(addr string) (string, error) {
		return k.Kubectl("exec", "never-ready", "--", "timeout", "10", "bash", "-c",
			`exec 3<>/dev/tcp/`+addr+`/80 && printf 'GET / HTTP/1.0\r\n\r\n' >&3 && cat <&3`)
	}
	if out, err := fetch(ip); err != nil || !strings.Contains(out, "Welcome to nginx") {
		t.Errorf("the Service %s from the pod never-ready: %v\n%s", ip, err, tail(out, 10))
	}
	list, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil || len(list.Items) == 0 {
		t.Fatalf("the Deployment's pods: %v", err)
	}
	if out, err := fetch(list.Items[0].Status.PodIP); err == nil {
		t.Errorf("the pod never-ready reached the pod %s on its own address %s, past the isolation:\n%s", list.Items[0].Name, list.Items[0].Status.PodIP, tail(out, 5))
	}
	return ip
}

func restarts(p *corev1.Pod) int32 {
	if len(p.Status.ContainerStatuses) == 0 {
		return 0
	}
	return p.Status.ContainerStatuses[0].RestartCount
}

func names(vms map[string]apitypes.VMStatus) []string {
	var out []string
	for n, st := range vms {
		out = append(out, n+" "+string(st.State))
	}
	sort.Strings(out)
	return out
}
