// Package podvm maps a Kubernetes pod to the micro-VM that runs it: one
// pod, one VM. The pod's single container becomes the VM's workload (its
// image, command, args, environment, working directory and user), its
// resources the VM's vCPUs and memory, its container ports the VM's ports,
// and its volumes the VM's ephemeral root or data volumes. What has no
// faithful mapping is refused, every reason at once, before anything runs.
package podvm

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"

	"microvm.dev/microvm/internal/config"
)

// The annotations a pod may carry for microvm.
const (
	// AnnotationHypervisor picks the VM's hypervisor (qemu,
	// cloud-hypervisor, firecracker); it wins over the pod's RuntimeClass.
	AnnotationHypervisor = "microvm.dev/hypervisor"
	// AnnotationVolumes names the pod's emptyDir volumes that are node-local
	// persistent data volumes instead, with their sizes: "data=10Gi,logs=1Gi".
	// They are kept on the host across the pod's restarts and recreations
	// under the same name, and deleted only as AnnotationVolumePolicy says.
	AnnotationVolumes = "microvm.dev/volumes"
	// AnnotationVolumePolicy is what deleting the pod does to its data
	// volumes: "retain" (the default) keeps them for a pod of the same
	// namespace and name, "delete" removes them with the pod.
	AnnotationVolumePolicy = "microvm.dev/volume-policy"
	// AnnotationInit is the VM's init: "microvm" (the default) or "image"
	// (the image's own /sbin/init, e.g. systemd).
	AnnotationInit = "microvm.dev/init"
)

// Volume policies (AnnotationVolumePolicy).
const (
	VolumesRetain = "retain"
	VolumesDelete = "delete"
)

// MinMemory is the least memory a VM boots with.
const MinMemory = 128 * config.MiB

// Name is the VM name of the pod namespace/name: "k" and 11 hex digits of
// a digest of both, within the 12 bytes a VM name may have. A pod created
// again under the same namespace and name gets the same VM name, and so
// its data volumes back.
func Name(namespace, name string) string {
	sum := sha256.Sum256([]byte(namespace + "/" + name))
	return "k" + hex.EncodeToString(sum[:])[:11]
}

// VM is a pod mapped to a VM.
type VM struct {
	// Name is the VM's name (Name of the pod).
	Name string
	// Spec is the VM's entry in the daemon's file.
	Spec config.VMSpec
	// Readiness and Liveness are the container's probes, run from the host.
	Readiness, Liveness *Probe
	// DeleteVolumes says the pod's data volumes go with the pod.
	DeleteVolumes bool
}

// Refused is a pod that cannot run as a VM, with every reason.
type Refused struct{ Reasons []string }

func (r *Refused) Error() string {
	return "the pod cannot run as a micro-VM: " + strings.Join(r.Reasons, "; ")
}

var volumeNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,19}$`)

// Map maps pod to a VM on subnet. It refuses (with *Refused) a pod with
// anything it cannot honour.
func Map(pod *corev1.Pod, subnet netip.Prefix) (*VM, error) {
	m := mapper{pod: pod}
	vm := &VM{Name: Name(pod.Namespace, pod.Name)}
	spec := &vm.Spec
	sub := subnet.String()
	spec.Subnet = &sub
	m.podLevel(spec)
	if len(pod.Spec.Containers) != 1 {
		m.refuse("spec.containers: the pod has %d containers; a micro-VM runs one", len(pod.Spec.Containers))
	}
	if len(pod.Spec.Containers) > 0 {
		m.container(&pod.Spec.Containers[0], vm)
	}
	m.volumes(vm)
	if len(m.reasons) > 0 {
		return nil, &Refused{Reasons: m.reasons}
	}
	return vm, nil
}

type mapper struct {
	pod     *corev1.Pod
	reasons []string
}

func (m *mapper) refuse(format string, args ...any) {
	m.reasons = append(m.reasons, fmt.Sprintf(format, args...))
}

// podLevel maps (or refuses) what the pod's spec says outside its container.
func (m *mapper) podLevel(spec *config.VMSpec) {
	ps := &m.pod.Spec
	if len(ps.InitContainers) > 0 {
		m.refuse("spec.initContainers: init containers are not supported; run the steps in the image's entrypoint")
	}
	if len(ps.EphemeralContainers) > 0 {
		m.refuse("spec.ephemeralContainers: not supported; use kubectl exec")
	}
	if ps.HostNetwork || ps.HostPID || ps.HostIPC {
		m.refuse("spec.hostNetwork/hostPID/hostIPC: a micro-VM does not share the host's namespaces")
	}
	if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
		m.refuse("spec.automountServiceAccountToken: service-account tokens are not mounted into micro-VMs; set it to false")
	}
	restart := map[corev1.RestartPolicy]string{
		"": config.RestartAlways, corev1.RestartPolicyAlways: config.RestartAlways,
		corev1.RestartPolicyOnFailure: config.RestartOnFailure, corev1.RestartPolicyNever: config.RestartNo,
	}[ps.RestartPolicy]
	spec.Restart = &restart
	hv := config.DefaultHypervisor
	if ps.RuntimeClassName != nil {
		hv = strings.TrimPrefix(*ps.RuntimeClassName, "microvm-")
	}
	if a, ok := m.pod.Annotations[AnnotationHypervisor]; ok {
		hv = a
	}
	if !slices.Contains(config.Hypervisors(), hv) {
		m.refuse("hypervisor %q (annotation %s or runtimeClassName microvm-<name>): not one of %s", hv, AnnotationHypervisor, strings.Join(config.Hypervisors(), ", "))
	}
	spec.Hypervisor = &hv
	if init, ok := m.pod.Annotations[AnnotationInit]; ok {
		if init != config.InitMicrovm && init != config.InitImage {
			m.refuse("annotation %s: %q is neither %s nor %s", AnnotationInit, init, config.InitMicrovm, config.InitImage)
		}
		spec.Init = &init
	}
}

// runAs is the workload's user from the pod's and the container's
// securityContext (the container's fields win, one by one): "uid", or
// "uid:gid" with runAsGroup, as the file's user takes them. A runAsGroup
// without a runAsUser keeps the image's user (nil).
func runAs(pod *corev1.PodSecurityContext, c *corev1.SecurityContext) *string {
	var uid, gid *int64
	if pod != nil {
		uid, gid = pod.RunAsUser, pod.RunAsGroup
	}
	if c != nil {
		if c.RunAsUser != nil {
			uid = c.RunAsUser
		}
		if c.RunAsGroup != nil {
			gid = c.RunAsGroup
		}
	}
	if uid == nil {
		return nil
	}
	u := strconv.FormatInt(*uid, 10)
	if gid != nil {
		u += ":" + strconv.FormatInt(*gid, 10)
	}
	return &u
}

// container maps the pod's one container.
func (m *mapper) container(c *corev1.Container, vm *VM) {
	spec := &vm.Spec
	at := "spec.containers[" + c.Name + "]"
	if c.Image == "" {
		m.refuse("%s.image: no image", at)
	}
	img := c.Image
	spec.Image = &img
	pull := map[corev1.PullPolicy]string{corev1.PullAlways: config.PullAlways, corev1.PullNever: config.PullNever}[c.ImagePullPolicy]
	if pull == "" {
		pull = config.PullMissing
	}
	spec.PullPolicy = &pull
	spec.Command, spec.Args = c.Command, c.Args
	if c.WorkingDir != "" {
		wd := c.WorkingDir
		spec.Workdir = &wd
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.Privileged != nil && *sc.Privileged {
			m.refuse("%s.securityContext.privileged: the workload is root in its own VM, never on the host", at)
		}
	}
	spec.User = runAs(m.pod.Spec.SecurityContext, c.SecurityContext)
	if c.Stdin || c.TTY {
		m.refuse("%s.stdin/tty: attaching to the workload is not supported; kubectl exec and kubectl logs are", at)
	}
	if len(c.Env) > 0 {
		spec.Env = map[string]string{}
		for _, e := range c.Env {
			if e.ValueFrom != nil {
				m.refuse("%s.env[%s]: valueFrom was not resolved", at, e.Name)
				continue
			}
			spec.Env[e.Name] = e.Value
		}
	}
	if len(c.EnvFrom) > 0 {
		m.refuse("%s.envFrom: not resolved; list the variables under env", at)
	}
	m.resources(c, spec, at)
	for _, p := range c.Ports {
		proto := strings.ToLower(string(p.Protocol))
		if proto == "" {
			proto = "tcp"
		}
		if proto != "tcp" && proto != "udp" {
			m.refuse("%s.ports[%d]: protocol %s is not supported (tcp or udp)", at, p.ContainerPort, p.Protocol)
			continue
		}
		if p.HostPort != 0 {
			m.refuse("%s.ports[%d].hostPort: not supported; the pod's IP is routed", at, p.ContainerPort)
		}
		spec.Ports = append(spec.Ports, config.Port{From: int(p.ContainerPort), To: int(p.ContainerPort), Proto: proto})
	}
	if c.StartupProbe != nil {
		m.refuse("%s.startupProbe: not supported; give the readiness probe a failure threshold", at)
	}
	vm.Readiness = m.probe(c, c.ReadinessProbe, at+".readinessProbe")
	vm.Liveness = m.probe(c, c.LivenessProbe, at+".livenessProbe")
	// The readiness probe is not the VM's healthCheck: the daemon restarts
	// a VM whose check never passes, a kubelet never restarts a container
	// for its readiness.
}

// resources maps limits (else requests) to vCPUs and memory.
func (m *mapper) resources(c *corev1.Container, spec *config.VMSpec, at string) {
	pick := func(name corev1.ResourceName) (resource.Quantity, bool) {
		if q, ok := c.Resources.Limits[name]; ok {
			return q, true
		}
		q, ok := c.Resources.Requests[name]
		return q, ok
	}
	if q, ok := pick(corev1.ResourceCPU); ok {
		n := int(math.Ceil(float64(q.MilliValue()) / 1000))
		n = max(n, 1)
		spec.VCPU = &n
	}
	if q, ok := pick(corev1.ResourceMemory); ok {
		size := config.Size(q.Value())
		if size < MinMemory {
			m.refuse("%s.resources memory %s: a VM needs at least 128Mi", at, q.String())
		}
		size = (size + config.MiB - 1) / config.MiB * config.MiB
		spec.Memory = &size
	}
}

// volumes maps the pod's volumes: emptyDir to the VM's ephemeral root, or
// to a data volume when AnnotationVolumes names it.
func (m *mapper) volumes(vm *VM) {
	persistent, err := parseVolumes(m.pod.Annotations[AnnotationVolumes])
	if err != nil {
		m.refuse("annotation %s: %v", AnnotationVolumes, err)
	}
	switch p := m.pod.Annotations[AnnotationVolumePolicy]; p {
	case "", VolumesRetain:
	case VolumesDelete:
		vm.DeleteVolumes = true
	default:
		m.refuse("annotation %s: %q is neither %s nor %s", AnnotationVolumePolicy, p, VolumesRetain, VolumesDelete)
	}
	mounts := map[string][]corev1.VolumeMount{}
	for _, c := range m.pod.Spec.Containers {
		for _, vmnt := range c.VolumeMounts {
			mounts[vmnt.Name] = append(mounts[vmnt.Name], vmnt)
		}
	}
	declared := map[string]bool{}
	for _, v := range m.pod.Spec.Volumes {
		declared[v.Name] = true
		at := "spec.volumes[" + v.Name + "]"
		size, isData := persistent[v.Name]
		switch {
		case v.EmptyDir != nil && isData:
			ms := mounts[v.Name]
			if len(ms) != 1 || ms[0].SubPath != "" || ms[0].ReadOnly {
				m.refuse("%s: a data volume is mounted once, whole and writable", at)
				continue
			}
			if !volumeNameRE.MatchString(v.Name) {
				m.refuse("%s: a data volume's name is 1-20 of a-z, 0-9, _ and - (it names the image file and the ext4 label)", at)
				continue
			}
			vm.Spec.Volumes = append(vm.Spec.Volumes, config.Volume{Name: v.Name, MountPoint: ms[0].MountPath, Size: size})
		case v.EmptyDir != nil:
			if v.EmptyDir.Medium != "" && v.EmptyDir.Medium != corev1.StorageMediumMemory {
				m.refuse("%s.emptyDir.medium %s: not supported", at, v.EmptyDir.Medium)
			}
			// The VM's root is its own and ephemeral: the mount path is
			// an empty, writable directory there, gone with the VM.
		default:
			m.refuse("%s: only emptyDir volumes are supported (name one in annotation %s to keep it on the host)", at, AnnotationVolumes)
		}
	}
	for name := range persistent {
		if !declared[name] {
			m.refuse("annotation %s: no emptyDir volume named %q in spec.volumes", AnnotationVolumes, name)
		}
	}
}

// parseVolumes reads "name=size,name=size".
func parseVolumes(s string) (map[string]config.Size, error) {
	out := map[string]config.Size{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, item := range strings.Split(s, ",") {
		name, size, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok {
			return nil, fmt.Errorf("%q is not name=size (e.g. data=10Gi)", item)
		}
		q, err := resource.ParseQuantity(size)
		if err != nil || q.Value() < int64(config.MiB) {
			return nil, fmt.Errorf("%s: size %q is not a quantity of at least 1Mi", name, size)
		}
		out[name] = config.Size((q.Value() + int64(config.MiB) - 1) / int64(config.MiB) * int64(config.MiB))
	}
	return out, nil
}

// probe maps a container's probe.
func (m *mapper) probe(c *corev1.Container, p *corev1.Probe, at string) *Probe {
	if p == nil {
		return nil
	}
	out := &Probe{
		InitialDelay: int(p.InitialDelaySeconds), Period: int(p.PeriodSeconds), Timeout: int(p.TimeoutSeconds),
		SuccessThreshold: int(p.SuccessThreshold), FailureThreshold: int(p.FailureThreshold),
	}
	out.defaults()
	port := func(ps intstr.IntOrString) int {
		if ps.Type == intstr.Int {
			return ps.IntValue()
		}
		for _, cp := range c.Ports {
			if cp.Name == ps.StrVal {
				return int(cp.ContainerPort)
			}
		}
		m.refuse("%s: no container port named %q", at, ps.StrVal)
		return 0
	}
	switch {
	case p.TCPSocket != nil:
		out.TCP = port(p.TCPSocket.Port)
	case p.HTTPGet != nil:
		if p.HTTPGet.Scheme == corev1.URISchemeHTTPS {
			m.refuse("%s.httpGet.scheme: HTTPS probes are not supported", at)
		}
		out.HTTP, out.Path = port(p.HTTPGet.Port), p.HTTPGet.Path
		if out.Path == "" {
			out.Path = "/"
		}
	case p.Exec != nil:
		out.Exec = p.Exec.Command
	default:
		m.refuse("%s: only tcpSocket, httpGet and exec probes are supported", at)
	}
	return out
}
