package bench

import (
	"context"
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

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"microvm.dev/microvm/bench/lab"
	"microvm.dev/microvm/internal/kubelet"
	"microvm.dev/microvm/internal/podvm"
	"microvm.dev/microvm/internal/testutil"
)

// kubeBench is a real control plane with one microvm node (microvm-kubelet
// over its daemon) and, beside it, a second daemon driven by microvm
// apply, sharing one store with the base image.
type kubeBench struct {
	cs           *kubernetes.Clientset
	node, direct *lab.Lab
	host         string // the host file's head both daemons' files start with
}

// newKubeBench starts it; everything stops with the benchmark.
func newKubeBench(b *testing.B) *kubeBench {
	bin := buildBins(b)
	store := filepath.Join(b.TempDir(), "store")
	if out, err := exec.Command("bash", "../scripts/build-base-image.sh", filepath.Join(store, "base")).CombinedOutput(); err != nil {
		b.Fatalf("base image: %v\n%s", err, out)
	}
	os.Chmod(filepath.Dir(store), 0o711)
	k := testutil.StartKube(b, testutil.KubeBinaries(b))
	cfg, err := clientcmd.BuildConfigFromFlags("", k.Admin)
	if err != nil {
		b.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	if out, err := k.Kubectl("apply", "-f", "../dist/kubernetes/rbac.yaml"); err != nil {
		b.Fatalf("rbac: %v\n%s", err, out)
	}

	node, err := lab.New("kbn", bin, store)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(node.Close)
	direct, err := lab.New("kbd", bin, store)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(direct.Close)
	for _, l := range []*lab.Lab{node, direct} {
		if err := l.StartDaemon(); err != nil {
			b.Fatal(err)
		}
	}
	host := "defaults: { stopTimeout: 10s }\n"
	base := filepath.Join(node.State, "host.yaml")
	os.WriteFile(base, []byte(host+"vms: {}\n"), 0o644)
	provider := exec.Command(filepath.Join(bin, "microvm-kubelet"), "--state-dir", node.State, "--socket", node.Socket, "--netns", "/run/netns/"+node.NS,
		"--kubeconfig", k.Kubeconfig(b, "microvm-kubelet-bench", "microvm:kubelets"), "--node", "bench", "--node-ip", "127.0.0.1",
		"--listen", "127.0.0.1:"+strconv.Itoa(testutil.FreePort(b)), "--pod-cidr", "10.244.1.0/24", "--config", base, "--client-ca-file", k.CA)
	logf, _ := os.Create(filepath.Join(node.State, "kubelet.log"))
	provider.Stdout, provider.Stderr = logf, logf
	provider.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := provider.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { provider.Process.Kill(); provider.Wait() })
	ctx := context.Background()
	poll(b, "the node ready", func() bool {
		n, err := cs.CoreV1().Nodes().Get(ctx, "bench", metav1.GetOptions{})
		return err == nil && len(n.Spec.Taints) == 1 // the not-ready taint is gone
	})

	return &kubeBench{cs: cs, node: node, direct: direct, host: host}
}

// BenchmarkPodsAtOnce measures a node's many pods at once, side by side
// in one run: a Deployment of N replicas created through the real
// control plane until all N are Ready, against the same N VMs in one file
// applied to a second daemon with microvm apply until it reports all N
// running, for N = 1, 4 and 12, rounds alternating between the two. It
// reports each one's median per N and their ratios (the goal: at most
// 1.2, Kubernetes adding at most 20% over the direct path). Run as root:
//
//	go test -run '^$' -bench PodsAtOnce -benchtime 1x -timeout 60m ./bench
func BenchmarkPodsAtOnce(b *testing.B) {
	kb := newKubeBench(b)
	ctx := context.Background()
	deps := kb.cs.AppsV1().Deployments("default")
	const rounds = 3
	for _, n := range []int{1, 4, 12} {
		var viaPods, viaApply []float64
		for round := range rounds {
			replicas := int32(n)
			spec := benchPod("w").Spec
			dep := &appsv1.Deployment{
				ObjectMeta: metav1.ObjectMeta{Name: "w"},
				Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "w"}},
					Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "w"}}, Spec: spec}},
			}
			start := time.Now()
			if _, err := deps.Create(ctx, dep, metav1.CreateOptions{}); err != nil {
				b.Fatal(err)
			}
			poll(b, fmt.Sprintf("%d replicas ready", n), func() bool {
				d, err := deps.Get(ctx, "w", metav1.GetOptions{})
				return err == nil && d.Status.ReadyReplicas == replicas
			})
			viaPods = append(viaPods, time.Since(start).Seconds())
			if err := deps.Delete(ctx, "w", metav1.DeleteOptions{}); err != nil {
				b.Fatal(err)
			}
			poll(b, "the replicas' VMs gone", func() bool {
				list, err := kb.cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=w"})
				out, _ := kb.node.CLI("list", "-o", "json")
				return err == nil && len(list.Items) == 0 && !strings.Contains(string(out), `"name": "k`) && !strings.Contains(string(out), `"name":"k`)
			})

			file := filepath.Join(kb.direct.State, "infra.yaml")
			var vms strings.Builder
			for i := range n {
				fmt.Fprintf(&vms, "  d%d: { image: base, vcpu: 1, memory: 256M, subnet: 10.245.%d.0/29 }\n", i, i+1)
			}
			os.WriteFile(file, []byte(kb.host+"vms:\n"+vms.String()), 0o644)
			start = time.Now()
			if out, err := kb.direct.CLI("apply", "-f", file); err != nil {
				b.Fatalf("apply: %v\n%s", err, out)
			}
			poll(b, fmt.Sprintf("%d VMs running", n), func() bool {
				out, _ := kb.direct.CLI("list", "-o", "json")
				return strings.Count(strings.ReplaceAll(string(out), " ", ""), `"state":"running"`) == n
			})
			viaApply = append(viaApply, time.Since(start).Seconds())
			os.WriteFile(file, []byte(kb.host+"vms: {}\n"), 0o644)
			if out, err := kb.direct.CLI("apply", "-f", file); err != nil {
				b.Fatalf("apply: %v\n%s", err, out)
			}
			b.Logf("N=%d round %d: pods %.2f s, apply %.2f s", n, round, viaPods[round], viaApply[round])
		}
		mp, ma := lab.Median(viaPods), lab.Median(viaApply)
		b.ReportMetric(mp, fmt.Sprintf("pods%d-s", n))
		b.ReportMetric(ma, fmt.Sprintf("apply%d-s", n))
		b.ReportMetric(mp/ma, fmt.Sprintf("ratio%d", n))
		b.Logf("N=%d: Deployment created to all Ready: median %.2f s %v; microvm apply to all running: median %.2f s %v; ratio %.2f (%d CPUs)", n, mp, viaPods, ma, viaApply, mp/ma, runtime.NumCPU())
	}
}

// BenchmarkPodStart measures what Kubernetes adds to a VM's start, side by
// side in one run: a pod created through a real kube-apiserver, placed by
// kube-scheduler and run by microvm-kubelet until its Ready condition is
// true, against the same VM (the same image, vCPU and memory) added to a
// second daemon's file with microvm apply until the daemon reports it
// running, which is what a user without Kubernetes does. Rounds alternate
// between the two; it reports each one's median and their ratio. Run as
// root:
//
//	go test -run '^$' -bench PodStart -benchtime 1x ./bench
func BenchmarkPodStart(b *testing.B) {
	kb := newKubeBench(b)
	cs, node, direct, host := kb.cs, kb.node, kb.direct, kb.host
	ctx := context.Background()
	const rounds = 7
	var viaPod, viaApply []float64
	for i := range rounds {
		name := fmt.Sprintf("p%d", i)
		start := time.Now()
		if _, err := cs.CoreV1().Pods("default").Create(ctx, benchPod(name), metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		poll(b, name+" ready", func() bool {
			p, err := cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false
			}
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					return true
				}
			}
			return false
		})
		viaPod = append(viaPod, time.Since(start).Seconds())
		now := int64(0)
		cs.CoreV1().Pods("default").Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &now})
		poll(b, name+"'s VM gone", func() bool {
			out, _ := node.CLI("list", "-o", "json")
			return !strings.Contains(string(out), podvm.Name("default", name))
		})

		file := filepath.Join(direct.State, "infra.yaml")
		os.WriteFile(file, []byte(host+"vms:\n  d: { image: base, vcpu: 1, memory: 256M, subnet: 10.245.1.0/29 }\n"), 0o644)
		start = time.Now()
		if out, err := direct.CLI("apply", "-f", file); err != nil {
			b.Fatalf("apply: %v\n%s", err, out)
		}
		poll(b, "d running", func() bool {
			out, _ := direct.CLI("status", "d", "-o", "json")
			return strings.Contains(string(out), `"state": "running"`) || strings.Contains(string(out), `"state":"running"`)
		})
		viaApply = append(viaApply, time.Since(start).Seconds())
		os.WriteFile(file, []byte(host+"vms: {}\n"), 0o644)
		if out, err := direct.CLI("apply", "-f", file); err != nil {
			b.Fatalf("apply: %v\n%s", err, out)
		}
	}
	mp, ma := lab.Median(viaPod), lab.Median(viaApply)
	b.ReportMetric(mp, "pod-to-ready-s")
	b.ReportMetric(ma, "apply-to-running-s")
	b.ReportMetric(mp/ma, "pod/apply")
	b.Logf("pod created to Ready: median %.2f s %v; microvm apply to running: median %.2f s %v (%d rounds, %d CPUs)", mp, viaPod, ma, viaApply, rounds, runtime.NumCPU())
}

// benchPod is a pod of the base image as the direct arm's VM.
func benchPod(name string) *corev1.Pod {
	no := false
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken: &no,
			Tolerations:                  []corev1.Toleration{{Key: kubelet.TaintKey, Operator: corev1.TolerationOpExists}},
			Containers: []corev1.Container{{Name: "c", Image: "base", Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{
				// 100m: the VM's one vCPU (rounded up), and twelve of them
				// fit a node of two CPUs.
				corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("256Mi"),
			}}}},
		},
	}
}

// buildBins builds microvm, microvm-init and microvm-kubelet.
func buildBins(b *testing.B) string {
	dir := b.TempDir()
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	for _, c := range [][]string{
		{"build", "-o", dir + "/microvm", "microvm.dev/microvm/cmd/microvm"},
		{"build", "-o", dir + "/microvm-kubelet", "microvm.dev/microvm/cmd/microvm-kubelet"},
		{"build", "-ldflags=-s -w", "-o", dir + "/microvm-init", "microvm.dev/microvm/cmd/microvm-init"},
	} {
		cmd := exec.Command(gobin, c...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("go %s: %v\n%s", strings.Join(c, " "), err, out)
		}
	}
	return dir
}

func poll(b *testing.B, what string, ok func() bool) {
	b.Helper()
	for deadline := time.Now().Add(5 * time.Minute); !ok(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("%s: not in 5 minutes", what)
		}
	}
}
