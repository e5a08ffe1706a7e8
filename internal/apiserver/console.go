package apiserver

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/coder/websocket"

	"microvm.dev/microvm/internal/daemon"
	"microvm.dev/microvm/internal/supervisor"
	"microvm.dev/microvm/internal/vmm/backends"
)

// console serves GET /v1/vms/{name}/console: a websocket carrying the
// VM's serial console both ways as binary messages, the same console
// `microvm console` attaches to (one client at a time). The websocket
// handshake refuses cross-origin pages.
func console(d *daemon.Daemon) func(http.ResponseWriter, *http.Request, string) {
	return func(w http.ResponseWriter, r *http.Request, name string) {
		st, ok := d.Status(name)
		if !ok {
			writeErr(w, http.StatusNotFound, fmt.Errorf("no VM named %q", name))
			return
		}
		if st.State != supervisor.Running || st.Spec == nil {
			writeErr(w, http.StatusConflict, fmt.Errorf("%s is %s: only a running VM has a console", name, st.State))
			return
		}
		if b, err := backends.Get(st.Spec.Hypervisor); err == nil && !b.Capabilities().InteractiveConsole {
			writeErr(w, http.StatusConflict, fmt.Errorf("%s runs on %s, whose serial console is a log only", name, b.Name()))
			return
		}
		conn, err := net.Dial("unix", d.ConsoleSocket(name))
		if err != nil {
			writeErr(w, http.StatusConflict, fmt.Errorf("attach to the console of %s: %w (is another console attached?)", name, err))
			return
		}
		defer conn.Close()
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return // Accept has answered
		}
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		wsConn := websocket.NetConn(ctx, ws, websocket.MessageBinary)
		defer wsConn.Close()
		go func() {
			io.Copy(wsConn, conn)
			cancel()
		}()
		io.Copy(conn, wsConn)
	}
}
