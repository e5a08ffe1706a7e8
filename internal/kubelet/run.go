package kubelet

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node"
	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
)

// ServeOptions are how the node talks to Kubernetes.
type ServeOptions struct {
	// Listen is the node API's address (host:port), which the API server
	// reaches for logs, exec and port-forward.
	Listen string
	// TLSCert and TLSKey are the node API's serving certificate; unset, a
	// self-signed one is made once in CertDir (ServingCert).
	TLSCert, TLSKey, CertDir string
	// ClientCA verifies client certificates (the API server's
	// --kubelet-client-certificate); bearer tokens are checked with the
	// API server (TokenReview) either way, and every request is
	// authorized by it (SubjectAccessReview), as a kubelet does.
	ClientCA string
	Node     NodeOptions
}

// Client is a Kubernetes client from a kubeconfig path ("" = in-cluster,
// or $KUBECONFIG).
func Client(kubeconfig string) (kubernetes.Interface, error) {
	c, err := nodeutil.ClientsetFromEnv(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("the kubeconfig: %w", err)
	}
	return c, nil
}

// Serve registers the node and runs it until ctx ends: the recorded pods
// are adopted first, then the node and pod controllers run.
func Serve(ctx context.Context, client kubernetes.Interface, opts Options, so ServeOptions) error {
	_, portText, err := net.SplitHostPort(so.Listen)
	if err != nil {
		return fmt.Errorf("--listen %q: %w", so.Listen, err)
	}
	so.Node.Port, _ = strconv.Atoi(portText)
	eb := record.NewBroadcaster()
	defer eb.Shutdown()
	opts.Recorder = eb.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "microvm-kubelet", Host: opts.Node})
	if opts.Secrets == nil {
		opts.Secrets = func(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
			return client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
		}
	}
	p, err := New(opts)
	if err != nil {
		return err
	}
	if so.TLSCert == "" {
		if so.TLSCert, so.TLSKey, err = ServingCert(so.CertDir, opts.Node, opts.NodeIP); err != nil {
			return err
		}
	}
	cert, err := tls.LoadX509KeyPair(so.TLSCert, so.TLSKey)
	if err != nil {
		return fmt.Errorf("the node API's certificate: %w", err)
	}
	eb.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	spec, err := p.NodeSpec(so.Node)
	if err != nil {
		return err
	}
	auth, err := nodeutil.WebhookAuth(client, opts.Node, func(c *nodeutil.WebhookAuthConfig) error {
		if so.ClientCA == "" {
			return nil
		}
		ca, err := dynamiccertificates.NewDynamicCAContentFromFile("client-ca", so.ClientCA)
		if err != nil {
			return fmt.Errorf("--client-ca-file: %w", err)
		}
		c.AuthnConfig.ClientCertificateCAContentProvider = ca
		return nil
	})
	if err != nil {
		return fmt.Errorf("the node API's authentication: %w", err)
	}
	mux := http.NewServeMux()
	np := &nodeProvider{daemon: opts.Daemon, client: client, node: spec, netns: opts.NetNS, every: 30 * time.Second}
	n, err := nodeutil.NewNode(opts.Node,
		func(nodeutil.ProviderConfig) (nodeutil.Provider, node.NodeProvider, error) { return p, np, nil },
		nodeutil.WithClient(client),
		nodeutil.AttachProviderRoutes(mux),
		func(c *nodeutil.NodeConfig) error {
			c.NodeSpec = *spec
			c.HTTPListenAddr = so.Listen
			c.Handler = nodeutil.WithAuth(nodeutil.InstrumentAuth(auth), mux)
			c.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequestClientCert}
			c.EventRecorder = opts.Recorder
			c.NumWorkers = 4
			return nil
		},
	)
	if err != nil {
		return fmt.Errorf("the virtual-kubelet node: %w", err)
	}
	if err := p.Adopt(ctx); err != nil {
		return err
	}
	opts.Log.Info("node registering", "node", opts.Node, "listen", so.Listen, "podCIDR", opts.PodCIDR.String(), "adopted", p.count())
	if err := n.Run(ctx); err != nil && ctx.Err() == nil {
		return fmt.Errorf("the node %s: %w", opts.Node, err)
	}
	return nil
}
