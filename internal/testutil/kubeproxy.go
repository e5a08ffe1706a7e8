package testutil

import (
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ServiceCIDR is the Service range StartKube gives the API server
// (--service-cluster-ip-range).
const ServiceCIDR = "10.96.0.0/16"

// ProxyKubeconfig is the kubeconfig path a kube-proxy configuration names
// (clientConnection.kubeconfig); StartProxy puts a kubeconfig of its own
// there.
const ProxyKubeconfig = "/etc/microvm/kube-proxy.kubeconfig"

// StartProxy runs Kubernetes' own kube-proxy with the configuration config
// (a KubeProxyConfiguration whose kubeconfig is ProxyKubeconfig) as node's
// proxy inside ns, the namespace a host's daemon runs its VMs in.
// kube-proxy runs as system:kube-proxy (the built-in node-proxier role) and
// reaches the API server at its own address: ns's loopback relays to the
// test's, where the control plane listens. It waits for kube-proxy's
// first ruleset.
func (k *Kube) StartProxy(t testing.TB, ns *Netns, node, config string) {
	t.Helper()
	if !strings.Contains(config, ProxyKubeconfig) {
		t.Fatalf("the kube-proxy configuration names no kubeconfig %s", ProxyKubeconfig)
	}
	u, err := url.Parse(k.URL)
	if err != nil {
		t.Fatal(err)
	}
	relay(ns.Listen(t, u.Host), u.Host)
	name := "kube-proxy-" + node
	file := filepath.Join(k.dir, name+".yaml")
	config = strings.ReplaceAll(config, ProxyKubeconfig, k.Kubeconfig(t, "system:kube-proxy"))
	if err := os.WriteFile(file, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	exited := k.start(t, name, "ip", "netns", "exec", ns.Name, k.Tools.Proxy,
		"--config", file, "--hostname-override", node, "--v", "1")
	// Ready once it has written its table's services chain.
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
		if out, err := ns.Exec("nft", "list", "chain", "ip", "kube-proxy", "services"); err == nil && strings.Contains(out, "services") {
			return
		}
		select {
		case <-exited:
			t.Fatalf("kube-proxy exited:\n%s", Tail(k.Log(name), 30))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("kube-proxy wrote no ruleset in 2 minutes:\n%s", Tail(k.Log(name), 30))
		}
	}
}

// relay copies every connection ln accepts to and from addr, dialled from
// the test's own namespace, until the test ends.
func relay(ln net.Listener, addr string) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", addr)
				if err != nil {
					return // the client sees its connection closed
				}
				defer up.Close()
				done := make(chan struct{})
				go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite(); close(done) }()
				io.Copy(c, up)
				c.(*net.TCPConn).CloseWrite()
				<-done
			}()
		}
	}()
}
