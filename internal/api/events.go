package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"microvm.dev/microvm/internal/apitypes"
)

// maxEvent bounds one event's data: the VM list of a host full of VMs.
const maxEvent = 16 << 20

// WatchVMs follows GET /v1/events until ctx ends or the stream does,
// calling vms with the VM list of each "vms" event (the first at once).
// It returns why the stream ended (io.EOF when the daemon closed it).
func (c *Client) WatchVMs(ctx context.Context, vms func([]apitypes.VMStatus)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r, w := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := c.StreamContext(ctx, "/v1/events", w)
		w.CloseWithError(err)
		done <- err
	}()
	err := readEvents(r, vms)
	r.CloseWithError(err)
	cancel()
	if serr := <-done; err == nil {
		err = serr
	}
	if err == nil {
		err = io.EOF
	}
	return err
}

// readEvents reads server-sent events from r and calls vms with each
// "vms" event's list, until r ends.
func readEvents(r io.Reader, vms func([]apitypes.VMStatus)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxEvent)
	event, data := "", ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if event == apitypes.EventVMs && data != "" {
				var list []apitypes.VMStatus
				if err := json.Unmarshal([]byte(data), &list); err != nil {
					return fmt.Errorf("the daemon's event: %w", err)
				}
				vms(list)
			}
			event, data = "", ""
		case strings.HasPrefix(line, ":"): // a comment (keepalive)
		case strings.HasPrefix(line, "event:"):
			event = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			data += strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " ")
		}
	}
	return sc.Err()
}
