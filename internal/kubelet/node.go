package kubelet

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"microvm.dev/microvm/internal/api"
	"microvm.dev/microvm/internal/vmm/backends"
)

// Labels, annotations, the taint and the condition of a microvm node.
const (
	// LabelKVM says whether the host has /dev/kvm.
	LabelKVM = "microvm.dev/kvm"
	// LabelHypervisorPrefix+name is "true" for each hypervisor installed.
	LabelHypervisorPrefix = "hypervisor.microvm.dev/"
	// AnnotationPodCIDR is where the node's pods' subnets come from; other
	// nodes check they have a route to it.
	AnnotationPodCIDR = "microvm.dev/pod-cidr"
	// TaintKey keeps pods that do not tolerate micro-VMs off the node:
	// virtual-kubelet's provider taint, with the value microvm.
	TaintKey = "virtual-kubelet.io/provider"
	// ConditionPodRoutes says whether this host routes every other microvm
	// node's pod CIDR somewhere other than its default route.
	ConditionPodRoutes corev1.NodeConditionType = "PodRoutes"
)

// NodeOptions are the node's facts besides the provider's.
type NodeOptions struct {
	// Port is the node API's port (the kubelet endpoint).
	Port int
	// MaxPods is the most pods the node takes.
	MaxPods int
	// ReserveMemory is the host's memory kept from pods.
	ReserveMemory resource.Quantity
	// Version is microvm's version, in the node's kubelet version.
	Version string
}

// NodeSpec is the Node the host registers as: its capacity (CPUs, memory
// less the reserve, the pod count), its labels (architecture, KVM, the
// hypervisors installed), the microvm taint, its address and the node
// API's port.
func (p *Provider) NodeSpec(o NodeOptions) (*corev1.Node, error) {
	mem, err := memTotal()
	if err != nil {
		return nil, err
	}
	mem.Sub(o.ReserveMemory)
	if mem.Sign() <= 0 {
		return nil, fmt.Errorf("the memory reserve %s leaves the host no memory for pods", o.ReserveMemory.String())
	}
	_, kvmErr := os.Stat("/dev/kvm")
	labels := map[string]string{
		"type":                   "virtual-kubelet",
		"kubernetes.io/role":     "agent",
		"kubernetes.io/hostname": p.opts.Node,
		"kubernetes.io/os":       "linux",
		"kubernetes.io/arch":     runtime.GOARCH,
		LabelKVM:                 strconv.FormatBool(kvmErr == nil),
	}
	for _, b := range backends.All() {
		if _, err := exec.LookPath(b.Binary(runtime.GOARCH)); err == nil {
			labels[LabelHypervisorPrefix+b.Name()] = "true"
		}
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI),
		corev1.ResourceMemory: mem,
		corev1.ResourcePods:   *resource.NewQuantity(int64(o.MaxPods), resource.DecimalSI),
	}
	now := metav1.Now()
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        p.opts.Node,
			Labels:      labels,
			Annotations: map[string]string{AnnotationPodCIDR: p.opts.PodCIDR.String()},
		},
		Spec: corev1.NodeSpec{
			Taints: []corev1.Taint{{Key: TaintKey, Value: "microvm", Effect: corev1.TaintEffectNoSchedule}},
		},
		Status: corev1.NodeStatus{
			Capacity:    capacity,
			Allocatable: capacity,
			Phase:       corev1.NodeRunning,
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: p.opts.NodeIP.String()},
				{Type: corev1.NodeHostName, Address: p.opts.Node},
			},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(o.Port)}},
			NodeInfo: corev1.NodeSystemInfo{
				Architecture: runtime.GOARCH, OperatingSystem: "linux",
				KubeletVersion: "v1.37.0-microvm." + o.Version, ContainerRuntimeVersion: "microvm://" + o.Version,
			},
			Conditions: []corev1.NodeCondition{
				cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "the microvm daemon answers"),
				cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", ""),
				cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", ""),
				cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", ""),
				cond(corev1.NodeNetworkUnavailable, corev1.ConditionFalse, "RouteCreated", ""),
			},
		},
	}
	return n, nil
}

// memTotal is the host's memory (MemTotal in /proc/meminfo).
func memTotal() (resource.Quantity, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return resource.Quantity{}, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return resource.Quantity{}, fmt.Errorf("/proc/meminfo: %q", s.Text())
			}
			return *resource.NewQuantity(kb*1024, resource.BinarySI), nil
		}
	}
	return resource.Quantity{}, fmt.Errorf("/proc/meminfo has no MemTotal")
}

// nodeProvider keeps the node's status: Ready while the daemon answers,
// and the PodRoutes condition from a check of the other nodes' pod CIDRs
// against this host's routes.
type nodeProvider struct {
	daemon *api.Client
	client kubernetes.Interface
	node   *corev1.Node
	netns  string
	every  time.Duration
}

// Ping fails while the daemon does not answer: the node then goes NotReady.
func (np *nodeProvider) Ping(ctx context.Context) error {
	if _, err := np.daemon.VMs(); err != nil {
		return fmt.Errorf("the microvm daemon: %w", err)
	}
	return ctx.Err()
}

// NotifyNodeStatus starts the route check, which reports through cb.
func (np *nodeProvider) NotifyNodeStatus(ctx context.Context, cb func(*corev1.Node)) {
	go func() {
		last := ""
		for {
			status, msg := np.checkRoutes(ctx)
			if status+msg != last {
				last = status + msg
				n := np.node.DeepCopy()
				setCondition(n, ConditionPodRoutes, corev1.ConditionStatus(status), "PodRoutesChecked", msg)
				cb(n)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(np.every):
			}
		}
	}()
}

// checkRoutes looks up, in this host's routing table, the first address
// of every other microvm node's pod CIDR: a pod IP there is reachable
// only if a route other than the default one takes it (a static route
// to that host, or its Tailscale subnet route).
func (np *nodeProvider) checkRoutes(ctx context.Context) (status, msg string) {
	nodes, err := np.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return string(corev1.ConditionUnknown), "list the nodes: " + err.Error()
	}
	var missing, ok []string
	for _, n := range nodes.Items {
		cidr, err := netip.ParsePrefix(n.Annotations[AnnotationPodCIDR])
		if n.Name == np.node.Name || err != nil {
			continue
		}
		dev, err := routeTo(np.netns, cidr.Addr().Next())
		if err != nil {
			missing = append(missing, fmt.Sprintf("%s (%s): %v", n.Name, cidr, err))
			continue
		}
		ok = append(ok, fmt.Sprintf("%s (%s) via %s", n.Name, cidr, dev))
	}
	if len(missing) > 0 {
		return string(corev1.ConditionFalse), "no route to the pods of " + strings.Join(missing, "; ") + " (route each node's pod CIDR to it, or advertise it as a Tailscale subnet route: docs/kubernetes.md)"
	}
	if len(ok) == 0 {
		return string(corev1.ConditionTrue), "no other microvm node"
	}
	return string(corev1.ConditionTrue), "routed: " + strings.Join(ok, "; ")
}

// routeTo is the interface of the host's route to addr, refusing the
// default route, in the namespace nsPath ("" = this one).
func routeTo(nsPath string, addr netip.Addr) (string, error) {
	h := &netlink.Handle{}
	if nsPath != "" {
		ns, err := netns.GetFromPath(nsPath)
		if err != nil {
			return "", err
		}
		defer ns.Close()
		nh, err := netlink.NewHandleAt(ns)
		if err != nil {
			return "", err
		}
		defer nh.Close()
		h = nh
	}
	routes, err := h.RouteGet(addr.AsSlice())
	if err != nil || len(routes) == 0 {
		return "", fmt.Errorf("no route: %v", err)
	}
	r := routes[0]
	link, err := h.LinkByIndex(r.LinkIndex)
	if err != nil {
		return "", err
	}
	if r.Table != 0 && r.Table != 254 {
		// A policy table of its own routes it (tailscaled's 52).
		return link.Attrs().Name, nil
	}
	main, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 254}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return "", err
	}
	for _, t := range main {
		if t.Dst == nil {
			continue
		}
		if ones, _ := t.Dst.Mask.Size(); ones > 0 && t.Dst.Contains(addr.AsSlice()) {
			return link.Attrs().Name, nil
		}
	}
	return "", fmt.Errorf("only the default route would take it")
}

// setCondition sets (or adds) the node's condition t.
func setCondition(n *corev1.Node, t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) {
	now := metav1.Now()
	for i := range n.Status.Conditions {
		c := &n.Status.Conditions[i]
		if c.Type == t {
			if c.Status != s {
				c.LastTransitionTime = now
			}
			c.Status, c.Reason, c.Message, c.LastHeartbeatTime = s, reason, msg, now
			return
		}
	}
	n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now})
}
