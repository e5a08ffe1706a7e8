package podvm

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"microvm.dev/microvm/internal/config"
)

var subnet = netip.MustParsePrefix("10.244.1.8/29")

func pod() *corev1.Pod {
	no, uid := false, int64(33)
	rc := "microvm-cloud-hypervisor"
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db-0", Annotations: map[string]string{
			AnnotationVolumes: "data=10Gi", AnnotationVolumePolicy: "delete",
		}},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken: &no, RestartPolicy: corev1.RestartPolicyOnFailure, RuntimeClassName: &rc,
			SecurityContext: &corev1.PodSecurityContext{RunAsUser: &uid},
			Containers: []corev1.Container{{
				Name: "db", Image: "registry.example/pg:16", ImagePullPolicy: corev1.PullAlways,
				Command: []string{"postgres"}, Args: []string{"-c", "fsync=on"}, WorkingDir: "/var/lib/postgresql",
				Env:   []corev1.EnvVar{{Name: "PGDATA", Value: "/data/pg"}},
				Ports: []corev1.ContainerPort{{Name: "pg", ContainerPort: 5432}, {ContainerPort: 9187, Protocol: corev1.ProtocolUDP}},
				Resources: corev1.ResourceRequirements{
					Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1500m"), corev1.ResourceMemory: resource.MustParse("1Gi")},
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m")},
				},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("pg")}}, PeriodSeconds: 5},
				LivenessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"pg_isready"}}}},
				VolumeMounts:   []corev1.VolumeMount{{Name: "data", MountPath: "/data"}, {Name: "tmp", MountPath: "/tmp/work"}},
			}},
			Volumes: []corev1.Volume{
				{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}},
			},
		},
	}
}

func TestMapPod(t *testing.T) {
	vm, err := Map(pod(), subnet)
	if err != nil {
		t.Fatal(err)
	}
	s := vm.Spec
	if vm.Name != Name("shop", "db-0") || len(vm.Name) != 12 || !vm.DeleteVolumes {
		t.Errorf("name %q, delete volumes %v", vm.Name, vm.DeleteVolumes)
	}
	want := map[string]any{
		"subnet": "10.244.1.8/29", "hypervisor": "cloud-hypervisor", "image": "registry.example/pg:16", "pull": config.PullAlways,
		"restart": config.RestartOnFailure, "user": "33", "workdir": "/var/lib/postgresql", "vcpu": 2, "memory": config.GiB,
	}
	got := map[string]any{
		"subnet": *s.Subnet, "hypervisor": *s.Hypervisor, "image": *s.Image, "pull": *s.PullPolicy,
		"restart": *s.Restart, "user": *s.User, "workdir": *s.Workdir, "vcpu": *s.VCPU, "memory": *s.Memory,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("mapped\n got %v\nwant %v", got, want)
	}
	if strings.Join(s.Command, " ") != "postgres" || strings.Join(s.Args, " ") != "-c fsync=on" || s.Env["PGDATA"] != "/data/pg" {
		t.Errorf("workload: %q %q %v", s.Command, s.Args, s.Env)
	}
	if len(s.Ports) != 2 || s.Ports[0].String() != "5432/tcp" || s.Ports[1].String() != "9187/udp" {
		t.Errorf("ports: %v", s.Ports)
	}
	if len(s.Volumes) != 1 || s.Volumes[0] != (config.Volume{Name: "data", MountPoint: "/data", Size: 10 * config.GiB}) {
		t.Errorf("volumes: %+v", s.Volumes)
	}
	if vm.Readiness == nil || vm.Readiness.TCP != 5432 || vm.Readiness.Period != 5 || vm.Readiness.FailureThreshold != 3 {
		t.Errorf("readiness: %+v", vm.Readiness)
	}
	if s.HealthCheck != nil {
		t.Errorf("the readiness probe became a health check, which restarts the VM: %+v", s.HealthCheck)
	}
	if vm.Liveness == nil || strings.Join(vm.Liveness.Exec, " ") != "pg_isready" || vm.Liveness.Period != 10 {
		t.Errorf("liveness: %+v", vm.Liveness)
	}
}

// The name depends on the namespace and name only: a pod made again finds
// its volumes.
func TestName(t *testing.T) {
	if Name("a", "b") != Name("a", "b") || Name("a", "b") == Name("a", "c") || Name("ab", "c") == Name("a", "bc") {
		t.Error("names do not tell pods apart")
	}
}

func TestRefusals(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(p *corev1.Pod)
		want   []string
	}{
		{"two containers", func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "side", Image: "x"})
		}, []string{"2 containers"}},
		{"token", func(p *corev1.Pod) { p.Spec.AutomountServiceAccountToken = nil }, []string{"automountServiceAccountToken"}},
		{"host network and init containers", func(p *corev1.Pod) {
			p.Spec.HostNetwork = true
			p.Spec.InitContainers = []corev1.Container{{Name: "i"}}
		}, []string{"hostNetwork", "initContainers"}},
		{"hypervisor", func(p *corev1.Pod) { p.Annotations[AnnotationHypervisor] = "xen" }, []string{`hypervisor "xen"`}},
		{"secret volume", func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "s", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "x"}}})
		}, []string{"spec.volumes[s]: only emptyDir"}},
		{"unknown data volume", func(p *corev1.Pod) { p.Annotations[AnnotationVolumes] = "data=1Gi,logs=1Gi" }, []string{`no emptyDir volume named "logs"`}},
		{"small memory", func(p *corev1.Pod) {
			p.Spec.Containers[0].Resources.Limits[corev1.ResourceMemory] = resource.MustParse("64Mi")
		}, []string{"at least 128Mi"}},
		{"privileged", func(p *corev1.Pod) {
			yes := true
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: &yes}
		}, []string{"privileged"}},
		{"named port", func(p *corev1.Pod) { p.Spec.Containers[0].ReadinessProbe.TCPSocket.Port = intstr.FromString("http") }, []string{`no container port named "http"`}},
		{"policy", func(p *corev1.Pod) { p.Annotations[AnnotationVolumePolicy] = "archive" }, []string{`"archive" is neither`}},
	} {
		p := pod()
		tc.change(p)
		_, err := Map(p, subnet)
		r, ok := err.(*Refused)
		if !ok {
			t.Errorf("%s: not refused: %v", tc.name, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(r.Error(), w) {
				t.Errorf("%s: %q lacks %q", tc.name, r.Error(), w)
			}
		}
		if len(r.Reasons) != len(tc.want) {
			t.Errorf("%s: reasons %q, want %d", tc.name, r.Reasons, len(tc.want))
		}
	}
}

// Requests stand in for limits; a pod with neither gets the defaults.
func TestResourcesFromRequests(t *testing.T) {
	p := pod()
	p.Spec.Containers[0].Resources = corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("300M")}}
	vm, err := Map(p, subnet)
	if err != nil {
		t.Fatal(err)
	}
	if *vm.Spec.VCPU != 1 || *vm.Spec.Memory != 287*config.MiB {
		t.Errorf("vcpu %d memory %s", *vm.Spec.VCPU, vm.Spec.Memory)
	}
	p.Spec.Containers[0].Resources = corev1.ResourceRequirements{}
	if vm, _ = Map(p, subnet); vm.Spec.VCPU != nil || vm.Spec.Memory != nil {
		t.Errorf("no resources: vcpu %v memory %v", vm.Spec.VCPU, vm.Spec.Memory)
	}
}

// TestRunAs: the pod's and the container's runAsUser and runAsGroup
// become the VM's user as docker run --user takes it; the container's
// fields win one by one.
func TestRunAs(t *testing.T) {
	i := func(v int64) *int64 { return &v }
	for _, c := range []struct {
		pod  *corev1.PodSecurityContext
		ctr  *corev1.SecurityContext
		want string
	}{
		{nil, nil, ""},
		{&corev1.PodSecurityContext{RunAsUser: i(33)}, nil, "33"},
		{&corev1.PodSecurityContext{RunAsUser: i(33), RunAsGroup: i(44)}, nil, "33:44"},
		{&corev1.PodSecurityContext{RunAsUser: i(33), RunAsGroup: i(44)}, &corev1.SecurityContext{RunAsUser: i(1000)}, "1000:44"},
		{&corev1.PodSecurityContext{RunAsGroup: i(44)}, nil, ""},
		{nil, &corev1.SecurityContext{RunAsUser: i(7), RunAsGroup: i(8)}, "7:8"},
	} {
		got := ""
		if u := runAs(c.pod, c.ctr); u != nil {
			got = *u
		}
		if got != c.want {
			t.Errorf("pod %+v container %+v: user %q, want %q", c.pod, c.ctr, got, c.want)
		}
	}
}
