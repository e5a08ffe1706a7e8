package qemu

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"time"
)

// QMP sends one command to a QEMU monitor socket and returns its "return"
// value. The QEMU Machine Protocol is line-delimited JSON: a greeting, then
// qmp_capabilities to leave negotiation mode, then commands; asynchronous
// events may come between a command and its reply and are skipped.
func QMP(socket, command string, args any, timeout time.Duration) (json.RawMessage, error) {
	c, err := net.DialTimeout("unix", socket, timeout)
	if err != nil {
		return nil, fmt.Errorf("qmp: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	r := bufio.NewReader(c)
	var greeting struct {
		QMP json.RawMessage `json:"QMP"`
	}
	if err := readJSON(r, &greeting); err != nil || greeting.QMP == nil {
		return nil, fmt.Errorf("qmp: no greeting from %s: %v", socket, err)
	}
	if _, err := exchange(c, r, "qmp_capabilities", nil); err != nil {
		return nil, err
	}
	return exchange(c, r, command, args)
}

func exchange(c net.Conn, r *bufio.Reader, command string, args any) (json.RawMessage, error) {
	req := map[string]any{"execute": command}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("qmp: %w", err)
	}
	if _, err := c.Write(append(b, '\n')); err != nil {
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
		if err := readJSON(r, &resp); err != nil {
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
