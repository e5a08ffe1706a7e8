// Package api is the client of the daemon's HTTP+JSON API (served by
// internal/apiserver), over its unix socket or its TLS TCP listener. It
// links only the wire types (internal/apitypes), so a program that talks
// to a daemon does not link the daemon.
package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"

	"microvm.dev/microvm/internal/apitypes"
)

const DefaultSocket = "/run/microvm/microvm.sock"

type Client struct {
	// where names the daemon in errors (the socket or the URL).
	where string
	// base is the URL prefix requests go to.
	base  string
	token string
	http  *http.Client
	// err, when set, is returned by every request: the client could not be
	// made (a bad --api-url or token file), and nothing is sent anywhere.
	err error
}

func Unusable(err error) *Client { return &Client{err: err} }

var ErrNoDaemon = errors.New("no daemon is listening")

func NewClient(socket string) *Client {
	return &Client{where: socket, base: "http://microvm", http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}}
}

func NewRemoteClient(baseURL, token, caFile string) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("API URL %q: want https://host:port (the TCP API is TLS only)", baseURL)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("API CA: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("API CA %s holds no PEM certificate", caFile)
		}
	}
	return &Client{where: baseURL, base: strings.TrimSuffix(baseURL, "/"), token: token,
		http: &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}}, nil
}

func (c *Client) newRequest(method, path string, body io.Reader) (*http.Request, error) {
	if c.err != nil {
		return nil, c.err
	}
	req, err := http.NewRequest(method, c.base+path, body)
	if err == nil && c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, err
}

func (c *Client) Do(method, path string, body io.Reader, out any) error {
	return c.DoContext(context.Background(), method, path, body, out)
}

func (c *Client) DoContext(ctx context.Context, method, path string, body io.Reader, out any) error {
	req, err := c.newRequest(method, path, body)
	if err != nil {
		return err
	}
	req = req.WithContext(ctx)
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w on %s (start one with: microvm daemon --config FILE)", ErrNoDaemon, c.where)
		}
		return fmt.Errorf("talk to the daemon on %s: %w", c.where, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if out != nil && len(data) > 0 {
		json.Unmarshal(data, out)
	}
	if resp.StatusCode/100 != 2 {
		var e apitypes.ErrorResponse
		json.Unmarshal(data, &e)
		if e.Error == "" {
			e.Error = resp.Status
		}
		return &StatusError{Code: resp.StatusCode, Message: e.Error}
	}
	return nil
}

type StatusError struct {
	Code    int
	Message string
}

func (e *StatusError) Error() string { return e.Message }

func (c *Client) Stream(path string, w io.Writer) error {
	return c.StreamContext(context.Background(), path, w)
}

func (c *Client) StreamContext(ctx context.Context, path string, w io.Writer) error {
	req, err := c.newRequest("GET", path, nil)
	if err != nil {
		return err
	}
	req = req.WithContext(ctx)
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w on %s (start one with: microvm daemon --config FILE)", ErrNoDaemon, c.where)
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e apitypes.ErrorResponse
		json.NewDecoder(resp.Body).Decode(&e)
		return &StatusError{Code: resp.StatusCode, Message: e.Error}
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

func (c *Client) VMs() ([]apitypes.VMStatus, error) {
	var out []apitypes.VMStatus
	return out, c.Do("GET", "/v1/vms", nil, &out)
}
