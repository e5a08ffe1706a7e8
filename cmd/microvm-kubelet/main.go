// Command microvm-kubelet makes a microvm host a Kubernetes node whose pods
// run as the daemon's micro-VMs (a virtual-kubelet provider,
// internal/kubelet). It is a program of its own, not a verb of microvm,
// because the Kubernetes client and virtual-kubelet's node API would make
// microvm itself several times larger on every host, Kubernetes or not.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/resource"

	"microvm.dev/microvm/internal/api"
	"microvm.dev/microvm/internal/kubelet"
	"microvm.dev/microvm/internal/pathflags"
	"microvm.dev/microvm/internal/state"
)

// Version is the program's version, set at link time with -X main.Version=….
var Version = "dev"

func main() {
	if err := command().Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "microvm-kubelet: %v\n", err)
		os.Exit(1)
	}
}

func command() *cobra.Command {
	var (
		stateDir, socket, netns                         string
		kubeconfig, node, nodeIP, podCIDR, base, listen string
		tlsCert, tlsKey, clientCA, reserve              string
		maxPods, subnetBits                             int
	)
	cmd := &cobra.Command{
		Use:           "microvm-kubelet --node NAME --node-ip IP --pod-cidr CIDR --config FILE",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
		Short:         "Make this host a Kubernetes node whose pods run as micro-VMs (virtual-kubelet)",
		Long: `microvm-kubelet registers this host with a Kubernetes cluster as a virtual-kubelet
node and runs every pod scheduled to it as a micro-VM of the local daemon,
one VM a pod: the pod's container image, command, args, env, ports and
resources become the VM's. The host's own file (--config: host settings,
defaults, its own VMs) is applied with the pods' VMs added, so the daemon
must not also deploy from git. kubectl logs, exec and port-forward reach the
VMs through the node API on --listen. Only pods that tolerate the taint
virtual-kubelet.io/provider=microvm:NoSchedule land here. See
docs/kubernetes.md.`,
		Example: "  microvm-kubelet --kubeconfig /etc/microvm/kubelet.kubeconfig --node host1 \\\n    --node-ip 192.168.1.10 --pod-cidr 10.244.1.0/24 --config /etc/microvm/host.yaml",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := pathflags.Absolute(cmd.Flags(), "state-dir", "socket", "netns", "kubeconfig", "config", "tls-cert-file", "tls-private-key-file", "client-ca-file"); err != nil {
				return err
			}
			for _, f := range [][2]string{{"--node", node}, {"--node-ip", nodeIP}, {"--pod-cidr", podCIDR}, {"--config", base}} {
				if f[1] == "" {
					return fmt.Errorf("%s is required (microvm-kubelet --help)", f[0])
				}
			}
			ip, err := netip.ParseAddr(nodeIP)
			if err != nil {
				return fmt.Errorf("--node-ip %q: %v", nodeIP, err)
			}
			cidr, err := netip.ParsePrefix(podCIDR)
			if err != nil {
				return fmt.Errorf("--pod-cidr %q: %v", podCIDR, err)
			}
			reserveQ, err := resource.ParseQuantity(reserve)
			if err != nil {
				return fmt.Errorf("--reserve-memory %q: %v", reserve, err)
			}
			dir := filepath.Join(stateDir, "kubelet")
			if kubeconfig != "" {
				if _, err := os.Stat(kubeconfig); err != nil {
					return fmt.Errorf("--kubeconfig: %w", err)
				}
			}
			client, err := kubelet.Client(kubeconfig)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("node", node)
			opts := kubelet.Options{
				Node: node, NodeIP: ip, Daemon: api.NewClient(socket), StateDir: stateDir, NetNS: netns,
				Records: filepath.Join(dir, "pods"), Base: base, PodCIDR: cidr, SubnetBits: subnetBits, Log: log,
			}
			so := kubelet.ServeOptions{
				Listen: listen, TLSCert: tlsCert, TLSKey: tlsKey, CertDir: dir, ClientCA: clientCA,
				Node: kubelet.NodeOptions{MaxPods: maxPods, ReserveMemory: reserveQ, Version: Version},
			}
			return kubelet.Serve(ctx, client, opts, so)
		},
	}
	f := cmd.Flags()
	f.StringVar(&stateDir, "state-dir", state.DefaultDir, "the daemon's state directory (microvm's SSH key for exec; the provider keeps its pods in STATE-DIR/kubelet)")
	f.StringVar(&socket, "socket", api.DefaultSocket, "the daemon's API socket")
	f.StringVar(&netns, "netns", "", "reach the VMs from the network namespace at this path instead of this process's (e.g. /run/netns/NAME)")
	f.StringVar(&kubeconfig, "kubeconfig", "", "the provider's kubeconfig (default in-cluster, or $KUBECONFIG)")
	f.StringVar(&node, "node", "", "the node's name")
	f.StringVar(&nodeIP, "node-ip", "", "the node's address: the API server reaches the node API there, and it is the pods' host IP")
	f.StringVar(&podCIDR, "pod-cidr", "", "this node's pod network (IPv4), one subnet per pod; other hosts must route it here")
	f.IntVar(&subnetBits, "pod-subnet-bits", 29, "the prefix length of each pod's subnet, /29 by default (8 addresses)")
	f.StringVar(&base, "config", "", "the host's own file (host settings, defaults, its own VMs), applied as the daemon's file; each pod's VM is put beside it")
	f.StringVar(&listen, "listen", ":10250", "the node API's address (logs, exec, port-forward)")
	f.StringVar(&tlsCert, "tls-cert-file", "", "the node API's certificate (default self-signed, made once in STATE-DIR/kubelet)")
	f.StringVar(&tlsKey, "tls-private-key-file", "", "the key of --tls-cert-file")
	f.StringVar(&clientCA, "client-ca-file", "", "CA that signs the API server's client certificate (its --kubelet-client-certificate)")
	f.IntVar(&maxPods, "max-pods", 32, "the most pods the node takes")
	f.StringVar(&reserve, "reserve-memory", "1Gi", "host memory kept from pods")
	return cmd
}
