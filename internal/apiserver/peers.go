package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/coder/websocket"

	"microvm.dev/microvm/internal/apitypes"
	"microvm.dev/microvm/internal/daemon"
	"microvm.dev/microvm/internal/peer"
	"microvm.dev/microvm/internal/transfer"
)

// moveRoutes move a VM to another host and drain this one.
func moveRoutes(mux *http.ServeMux, d *daemon.Daemon) {
	mux.HandleFunc("POST /v1/vms/{name}/move", withVM(func(w http.ResponseWriter, r *http.Request, name string) {
		to := r.URL.Query().Get("to")
		if to == "" {
			writeErr(w, http.StatusBadRequest, errors.New("move needs to=HOST"))
			return
		}
		// The move goes on if the client goes away: stopping half-way is
		// what the move is careful about, not what a closed terminal asks.
		res, err := d.Move(context.WithoutCancel(r.Context()), name, to, r.URL.Query().Get("mode"))
		moveReply(w, res, err)
	}))
	mux.HandleFunc("POST /v1/drain", func(w http.ResponseWriter, r *http.Request) {
		var to []string
		if s := r.URL.Query().Get("to"); s != "" {
			to = strings.Split(s, ",")
		}
		parallel := 1
		if s := r.URL.Query().Get("parallel"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 {
				writeErr(w, http.StatusBadRequest, fmt.Errorf("parallel=%q: want a number of at least 1", s))
				return
			}
			parallel = n
		}
		res, err := d.Drain(context.WithoutCancel(r.Context()), to, parallel, r.URL.Query().Get("mode"))
		moveReply(w, res, err)
	})
}

func moveReply(w http.ResponseWriter, v any, err error) {
	switch {
	case errors.Is(err, daemon.ErrUnknownVM):
		writeErr(w, http.StatusNotFound, err)
	case errors.Is(err, daemon.ErrMoveMode):
		writeErr(w, http.StatusBadRequest, err)
	case errors.Is(err, daemon.ErrNoPeers), errors.Is(err, daemon.ErrUnknownPeer), errors.Is(err, daemon.ErrMoving), errors.Is(err, daemon.ErrNoFile):
		writeErr(w, http.StatusConflict, err)
	case err != nil:
		writeErr(w, http.StatusBadGateway, err)
	default:
		writeJSON(w, http.StatusOK, v)
	}
}

// PeerHandler serves other hosts' daemons on the peer listener (TLS with
// both ends' keys checked against the file's peers, peer.ServerTLS): who
// this host is and its room, and a VM's files and its start when one
// moves here.
func PeerHandler(d *daemon.Daemon) http.Handler {
	mux := http.NewServeMux()
	from := func(h func(http.ResponseWriter, *http.Request, string, string)) http.HandlerFunc {
		return withVM(func(w http.ResponseWriter, r *http.Request, vm string) {
			name, ok := peer.PeerOf(r, d.TrustPeer)
			if !ok {
				writeErr(w, http.StatusForbidden, peer.ErrUntrusted)
				return
			}
			h(w, r, name, vm)
		})
	}
	mux.HandleFunc("GET /peer/v1/hello", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := peer.PeerOf(r, d.TrustPeer); !ok {
			writeErr(w, http.StatusForbidden, peer.ErrUntrusted)
			return
		}
		writeJSON(w, http.StatusOK, d.PeerHello())
	})
	mux.HandleFunc("PUT /peer/v1/incoming/{name}/{file}", from(func(w http.ResponseWriter, r *http.Request, host, vm string) {
		st, err := d.Receive(host, vm, r.PathValue("file"), r.Body)
		if err != nil {
			code := http.StatusBadRequest
			if errors.Is(err, daemon.ErrHere) {
				code = http.StatusConflict
			}
			writeErr(w, code, err)
			return
		}
		writeJSON(w, http.StatusOK, st)
	}))
	mux.HandleFunc("POST /peer/v1/incoming/{name}/{file}/cached", from(func(w http.ResponseWriter, r *http.Request, host, vm string) {
		var c apitypes.PeerCached
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBody)).Decode(&c); err != nil {
			writeErr(w, http.StatusBadRequest, err)
			return
		}
		st, err := d.ReceiveCached(host, vm, r.PathValue("file"), c.SHA256)
		switch {
		case errors.Is(err, daemon.ErrNotCached):
			writeErr(w, http.StatusNotFound, err)
		case errors.Is(err, daemon.ErrHere):
			writeErr(w, http.StatusConflict, err)
		case err != nil:
			writeErr(w, http.StatusBadRequest, err)
		default:
			writeJSON(w, http.StatusOK, st)
		}
	}))
	mux.HandleFunc("POST /peer/v1/incoming/{name}/commit", from(func(w http.ResponseWriter, r *http.Request, host, vm string) {
		var c apitypes.PeerCommit
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBody)).Decode(&c); err != nil {
			writeErr(w, http.StatusBadRequest, err)
			return
		}
		c.From = host // who it comes from is who connected
		if err := d.CommitMove(context.WithoutCancel(r.Context()), vm, c); err != nil {
			writeErr(w, http.StatusConflict, err)
			return
		}
		st, _ := d.Status(vm)
		writeJSON(w, http.StatusOK, st)
	}))
	mux.HandleFunc("GET /peer/v1/incoming/{name}/tunnel/{stream}", from(func(w http.ResponseWriter, r *http.Request, host, vm string) {
		// A live move's stream (its volumes over NBD, its memory), from
		// the other host's hypervisor to the one waiting here.
		conn, err := d.DialMove(r.Context(), vm, r.PathValue("stream"))
		if err != nil {
			writeErr(w, http.StatusConflict, err)
			return
		}
		defer conn.Close()
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return // Accept has answered
		}
		ws.SetReadLimit(-1)
		transfer.Splice(conn, websocket.NetConn(r.Context(), ws, websocket.MessageBinary))
	}))
	mux.HandleFunc("GET /peer/v1/vms/{name}", from(func(w http.ResponseWriter, r *http.Request, host, vm string) {
		st, known := d.Status(vm)
		writeJSON(w, http.StatusOK, apitypes.PeerVM{Known: known, State: st.State, Moving: d.Moving(vm), Waiting: d.WaitsForLiveMove(vm)})
	}))
	mux.HandleFunc("DELETE /peer/v1/incoming/{name}", from(func(w http.ResponseWriter, r *http.Request, host, vm string) {
		if err := d.AbortMove(vm); err != nil {
			writeErr(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, http.StatusOK, struct{}{})
	}))
	return mux
}
