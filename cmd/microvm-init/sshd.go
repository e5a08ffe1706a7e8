package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"microvm.dev/microvm/internal/guest"
	"microvm.dev/microvm/internal/guestagent"
	"microvm.dev/microvm/internal/guestroot"
)

// startSSH serves SSH on port 22: public-key login as root with the
// configured keys; every session runs chrooted in the guest's root.
func startSSH(spec guest.SSHSpec, procs *reaper, root guestroot.Root) error {
	signer, err := ssh.ParsePrivateKey([]byte(spec.HostKey))
	if err != nil {
		return fmt.Errorf("host key: %w", err)
	}
	// The keys are read at every login, so that a move can change them
	// while the guest runs (`init authorize`).
	if err := root.WriteAuthorized(usableKeys(spec.AuthorizedKeys)); err != nil {
		return fmt.Errorf("authorized keys: %w", err)
	}
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if root.IsAuthorized(key) {
				return nil, nil
			}
			return nil, fmt.Errorf("key %s is not authorized", ssh.FingerprintSHA256(key))
		},
	}
	cfg.AddHostKey(signer)
	ln, err := net.Listen("tcp", ":22")
	if err != nil {
		return err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				logf("ssh accept: %v", err)
				time.Sleep(100 * time.Millisecond)
				continue
			}
			go serveConn(c, withHostKey(cfg, root), procs, root)
		}
	}()
	return nil
}

// withHostKey is cfg, or a copy of it with the host key a clone was given
// (guestroot.HostKeyPath) when there is one.
func withHostKey(cfg *ssh.ServerConfig, root guestroot.Root) *ssh.ServerConfig {
	pem := root.HostKey()
	if pem == "" {
		return cfg
	}
	signer, err := ssh.ParsePrivateKey([]byte(pem))
	if err != nil {
		logf("the clone's host key: %v (serving the spec's)", err)
		return cfg
	}
	c := &ssh.ServerConfig{PublicKeyCallback: cfg.PublicKeyCallback}
	c.AddHostKey(signer)
	return c
}

// usableKeys are the keys that parse, the others logged and left out.
func usableKeys(keys []string) []string {
	var out []string
	for _, k := range keys {
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k)); err != nil {
			logf("skipping an unreadable authorized key: %v", err)
			continue
		}
		out = append(out, k)
	}
	return out
}

func serveConn(c net.Conn, cfg *ssh.ServerConfig, procs *reaper, root guestroot.Root) {
	sc, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		c.Close()
		return
	}
	defer sc.Close()
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "only sessions are served")
			continue
		}
		ch, requests, err := nc.Accept()
		if err != nil {
			continue
		}
		s := &session{ch: ch, procs: procs, root: root, env: map[string]string{}}
		go s.serve(requests)
	}
}

// session is one SSH session channel.
type session struct {
	ch      ssh.Channel
	procs   *reaper
	root    guestroot.Root
	env     map[string]string
	mu      sync.Mutex
	ptmx    *os.File
	winsize *pty.Winsize
	started bool
}

func (s *session) serve(requests <-chan *ssh.Request) {
	for req := range requests {
		ok := false
		switch req.Type {
		case "env":
			var kv struct{ Name, Value string }
			if ssh.Unmarshal(req.Payload, &kv) == nil {
				s.env[kv.Name] = kv.Value
				ok = true
			}
		case "pty-req":
			var p struct {
				Term             string
				Cols, Rows, W, H uint32
				Modes            string
			}
			if ssh.Unmarshal(req.Payload, &p) == nil {
				s.env["TERM"] = p.Term
				s.winsize = &pty.Winsize{Cols: uint16(p.Cols), Rows: uint16(p.Rows)}
				ok = true
			}
		case "window-change":
			var p struct{ Cols, Rows, W, H uint32 }
			if ssh.Unmarshal(req.Payload, &p) == nil {
				s.mu.Lock()
				if s.ptmx != nil {
					pty.Setsize(s.ptmx, &pty.Winsize{Cols: uint16(p.Cols), Rows: uint16(p.Rows)})
				} else if s.winsize != nil {
					s.winsize = &pty.Winsize{Cols: uint16(p.Cols), Rows: uint16(p.Rows)}
				}
				s.mu.Unlock()
				ok = true
			}
		case "shell", "exec", "subsystem":
			if s.started {
				break
			}
			argv, err := guestagent.SessionCommand(req.Type, req.Payload)
			if err != nil {
				fmt.Fprintln(s.ch.Stderr(), err)
				break
			}
			s.started = true
			ok = true
			if req.WantReply {
				req.Reply(true, nil)
			}
			go s.run(argv)
			continue
		}
		if req.WantReply {
			req.Reply(ok, nil)
		}
	}
}

// run starts argv in the root, wires it to the channel, and reports its
// exit status when it ends.
func (s *session) run(argv []string) {
	defer s.ch.Close()
	cmd := s.root.Command(argv, s.env, "")
	var copies sync.WaitGroup
	var pid int
	if s.winsize != nil {
		ptmx, err := pty.StartWithAttrs(cmd, s.winsize, &syscall.SysProcAttr{Chroot: string(s.root), Setsid: true, Setctty: true})
		if err != nil {
			fmt.Fprintf(s.ch.Stderr(), "start %s: %v\n", argv[0], err)
			s.exit(127)
			return
		}
		s.mu.Lock()
		s.ptmx = ptmx
		s.mu.Unlock()
		defer ptmx.Close()
		pid = cmd.Process.Pid
		go io.Copy(ptmx, s.ch)
		copies.Add(1)
		go func() { defer copies.Done(); io.Copy(s.ch, ptmx) }()
	} else {
		inR, inW, err := os.Pipe()
		if err != nil {
			s.exit(127)
			return
		}
		outR, outW, _ := os.Pipe()
		errR, errW, _ := os.Pipe()
		cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
		err = cmd.Start()
		inR.Close()
		outW.Close()
		errW.Close()
		if err != nil {
			inW.Close()
			outR.Close()
			errR.Close()
			fmt.Fprintf(s.ch.Stderr(), "start %s: %v\n", argv[0], err)
			s.exit(127)
			return
		}
		pid = cmd.Process.Pid
		go func() { io.Copy(inW, s.ch); inW.Close() }()
		copies.Add(2)
		go func() { defer copies.Done(); io.Copy(s.ch, outR); outR.Close() }()
		go func() { defer copies.Done(); io.Copy(s.ch.Stderr(), errR); errR.Close() }()
	}
	ws := <-s.procs.wait(pid)
	// Output still buffered in the pipes or the PTY is delivered first; a
	// background process keeping the PTY open must not hold the session.
	done := make(chan struct{})
	go func() { copies.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
	code := ws.ExitStatus()
	if ws.Signaled() {
		code = 128 + int(ws.Signal())
	}
	s.exit(code)
}

func (s *session) exit(code int) {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(code))
	s.ch.SendRequest("exit-status", false, b[:])
}

// serveSFTP serves the SFTP protocol on the standard streams (run inside
// the root by the SSH server).
func serveSFTP() error {
	srv, err := sftp.NewServer(struct {
		io.Reader
		io.WriteCloser
	}{os.Stdin, os.Stdout})
	if err != nil {
		return err
	}
	if err := srv.Serve(); err != nil && err != io.EOF {
		return err
	}
	return nil
}
