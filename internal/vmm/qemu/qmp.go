package qemu

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// QMP sends one command to a QEMU monitor socket and returns its "return"
// value.
func QMP(socket, command string, args any, timeout time.Duration) (json.RawMessage, error) {
	s, err := dialQMP(socket, timeout)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return s.Run(command, args)
}

// session is one QMP connection, for commands that belong together (a
// descriptor passed with getfd lives only as long as its connection). The
// QEMU Machine Protocol is line-delimited JSON: a greeting, then
// qmp_capabilities to leave negotiation mode, then commands; asynchronous
// events may come between a command and its reply and are skipped.
type session struct {
	c *net.UnixConn
	r *bufio.Reader
}

func dialQMP(socket string, timeout time.Duration) (*session, error) {
	c, err := net.DialTimeout("unix", socket, timeout)
	if err != nil {
		return nil, fmt.Errorf("qmp: %w", err)
	}
	s := &session{c: c.(*net.UnixConn), r: bufio.NewReader(c)}
	c.SetDeadline(time.Now().Add(timeout))
	var greeting struct {
		QMP json.RawMessage `json:"QMP"`
	}
	if err := readJSON(s.r, &greeting); err != nil || greeting.QMP == nil {
		c.Close()
		return nil, fmt.Errorf("qmp: no greeting from %s: %v", socket, err)
	}
	if _, err := s.Run("qmp_capabilities", nil); err != nil {
		c.Close()
		return nil, err
	}
	return s, nil
}

// Close ends the session.
func (s *session) Close() error { return s.c.Close() }

// Deadline sets how long the session may still take.
func (s *session) Deadline(d time.Duration) { s.c.SetDeadline(time.Now().Add(d)) }

// Run sends a command and waits for its reply.
func (s *session) Run(command string, args any) (json.RawMessage, error) {
	return s.send(command, args, nil)
}

// SendFD hands f to QEMU under name (QMP getfd), for a later command of
// this session to use as "fd:name".
func (s *session) SendFD(name string, f *os.File) error {
	_, err := s.send("getfd", map[string]string{"fdname": name}, unix.UnixRights(int(f.Fd())))
	return err
}

func (s *session) send(command string, args any, oob []byte) (json.RawMessage, error) {
	req := map[string]any{"execute": command}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("qmp: %w", err)
	}
	if _, _, err := s.c.WriteMsgUnix(append(b, '\n'), oob, nil); err != nil {
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	for {
		var resp struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class string `json:"class"`
				Desc  string `json:"desc"`
			} `json:"error"`
			Event string `json:"event"`
		}
		if err := readJSON(s.r, &resp); err != nil {
			return nil, fmt.Errorf("qmp %s: %w", command, err)
		}
		switch {
		case resp.Event != "":
			continue
		case resp.Error != nil:
			return nil, fmt.Errorf("qmp %s: %s: %s", command, resp.Error.Class, resp.Error.Desc)
		default:
			return resp.Return, nil
		}
	}
}

func readJSON(r *bufio.Reader, v any) error {
	line, err := r.ReadBytes('\n')
	if err != nil {
		return err
	}
	return json.Unmarshal(line, v)
}
