// Package health runs a VM's healthCheck from the host: a TCP port that
// must accept a connection, or an HTTP port that must answer GET with a
// 2xx or 3xx status, reached in the namespace of the VM's bridge.
package health

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"microvm.dev/microvm/internal/config"
	"microvm.dev/microvm/internal/vmm"
	"microvm.dev/microvm/internal/vmssh"
)

// Check runs vm's health check once (nil when it has none).
func Check(netns string, vm *config.VM) error {
	hc := vm.Supervision.HealthCheck
	if hc == nil {
		return nil
	}
	port := hc.TCP
	if hc.HTTP != 0 {
		port = hc.HTTP
	}
	addr := net.JoinHostPort(vm.Net.Address.String(), strconv.Itoa(port))
	conn, err := vmssh.DialIn(netns, addr, 3*time.Second)
	if err != nil {
		return fmt.Errorf("tcp %s: %w", addr, err)
	}
	defer conn.Close()
	if hc.HTTP == 0 {
		return nil
	}
	path := hc.Path
	if path == "" {
		path = "/"
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: microvm-health\r\n\r\n", path, vm.Name)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return fmt.Errorf("http %s%s: %w", addr, path, err)
	}
	resp.Body.Close()
	if resp.StatusCode >= 400 {
		return fmt.Errorf("http %s%s: %s", addr, path, resp.Status)
	}
	return nil
}

// Wait runs the check until it passes (again after 50 ms, backing off to
// every second), exited closes (the VM is gone) or deadline passes; the
// error then says the last failure.
func Wait(netns string, vm *config.VM, deadline time.Time, exited <-chan struct{}) error {
	// Soon after the guest's ready line its service is often up (always
	// for a clone, whose workload was warm when it was saved): checked
	// again after 50 ms, then twice as long each time, up to a second.
	every := 50 * time.Millisecond
	for {
		err := Check(netns, vm)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return vmm.NotReady(fmt.Errorf("not healthy: its health check did not pass in time: %w", err))
		}
		select {
		case <-exited:
			return fmt.Errorf("not healthy: the VM exited before its health check passed: %w", err)
		case <-time.After(every):
		}
		every = min(2*every, time.Second)
	}
}
