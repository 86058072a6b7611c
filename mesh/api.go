package mesh

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/wg"
)

// The control API. Every call runs on the agent's loop goroutine, so it sees
// and changes the runtime without locks.

type apiCall struct {
	fn    func(rt *runtime) (any, error)
	reply chan apiResult
}

type apiResult struct {
	v   any
	err error
}

// call runs fn on the loop and waits for its answer.
func (a *Agent) call(ctx context.Context, fn func(rt *runtime) (any, error)) (any, error) {
	c := apiCall{fn: fn, reply: make(chan apiResult, 1)}
	select {
	case a.api <- c:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case r := <-c.reply:
		return r.v, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func route[In, Out any](a *Agent, f func(rt *runtime, in In) (Out, error)) http.HandlerFunc {
	return control.Handle(func(ctx context.Context, in In) (Out, error) {
		v, err := a.call(ctx, func(rt *runtime) (any, error) { return f(rt, in) })
		if err != nil {
			var zero Out
			return zero, err
		}
		return v.(Out), nil
	})
}

func (a *Agent) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /v1/status", route(a, a.apiStatus))
	mux.Handle("GET /v1/health", route(a, a.apiHealth))
	mux.Handle("GET /v1/records", route(a, a.apiRecords))
	mux.Handle("POST /v1/leave", route(a, a.apiLeave))
	mux.Handle("POST /v1/revoke", route(a, a.apiRevoke))
	mux.Handle("POST /v1/down", route(a, a.apiDown))
	mux.Handle("POST /v1/rotate", a.rotateHandler())
	return mux
}

// Empty is the request or answer of calls without one.
type Empty struct{}

func (a *Agent) apiStatus(rt *runtime, _ Empty) (Status, error) { return a.buildStatus(rt) }

func (a *Agent) apiHealth(rt *runtime, _ Empty) (Health, error) {
	st, err := a.buildStatus(rt)
	if err != nil {
		return Health{}, err
	}
	stuck := rt.cfg.Rotation.AckTimeout + rt.cfg.Rotation.CompleteTimeout
	if rt.rot.Phase == wg.PhaseStable || time.Since(rt.rot.Started) < stuck {
		stuck = 0 // not stuck (yet)
	}
	interval := rt.cfg.Rotation.Interval
	if rt.nextRotation.IsZero() {
		interval = 0
	}
	return EvaluateHealth(st, interval, stuck, time.Now()), nil
}

// Records is the answer of GET /v1/records: every record held, encoded as
// gossiped (for diagnostics and tests).
type Records struct {
	Records [][]byte `json:"records"`
}

func (a *Agent) apiRecords(rt *runtime, _ Empty) (Records, error) {
	var out Records
	if rt.store == nil {
		return out, errGossipOff
	}
	if rt.own != nil {
		out.Records = append(out.Records, rt.own.Raw)
	}
	for _, n := range rt.store.siteNames() {
		out.Records = append(out.Records, rt.store.records[n].Raw)
	}
	return out, nil
}

var errGossipOff = errors.New("this site runs with static peers only (no gossip section in its configuration)")

// apiLeave publishes a signed goodbye, tells the cluster, and ends the
// agent. Other sites remove this site's peer and routes.
func (a *Agent) apiLeave(rt *runtime, _ Empty) (Empty, error) {
	if rt.gossip == nil {
		return Empty{}, errGossipOff
	}
	if err := a.publish(rt, true); err != nil {
		return Empty{}, err
	}
	// Give the broadcast a few gossip rounds before announcing the leave.
	time.Sleep(time.Second)
	if err := rt.gossip.Leave(5 * time.Second); err != nil {
		a.log.Warn("gossip leave incomplete", "err", err)
	}
	a.log.Info("left the mesh; stopping", "site", rt.cfg.Site)
	rt.stop = true
	return Empty{}, nil
}

// RevokeRequest carries a CA-signed revocation list (PEM or DER).
type RevokeRequest struct {
	CRL []byte `json:"crl"`
}

// RevokeReply says what the agent now holds.
type RevokeReply struct {
	Number  string `json:"number"`
	Revoked int    `json:"revoked"`
}

// Validate refuses a request without a list before the agent sees it.
func (r RevokeRequest) Validate() error {
	if len(r.CRL) == 0 {
		return errors.New("crl: empty: pass the revocation list 'dcmesh ca revoke' wrote (dcmesh revoke --in FILE)")
	}
	return nil
}

func (a *Agent) apiRevoke(rt *runtime, in RevokeRequest) (RevokeReply, error) {
	if rt.store == nil {
		return RevokeReply{}, errGossipOff
	}
	der := in.CRL
	if b, _ := pem.Decode(in.CRL); b != nil {
		der = b.Bytes
	}
	crl, err := trust.ParseRevocationList(der, rt.enr.cas)
	if err != nil {
		return RevokeReply{}, err
	}
	if a.installCRL(rt, crl) {
		a.log.Info("revocation list installed", "number", crl.Number.String(), "revoked", len(crl.Serials))
		a.spreadCRL(rt)
		a.commitStore(rt)
	}
	return RevokeReply{Number: rt.store.crl.Number.String(), Revoked: len(rt.store.crl.Serials)}, nil
}

// DownRequest stops the agent; Purge also removes the link and every route
// of ours, fail-closed routes included.
type DownRequest struct {
	Purge bool `json:"purge"`
}

func (a *Agent) apiDown(rt *runtime, in DownRequest) (Empty, error) {
	rt.stop, rt.purge = true, in.Purge
	a.log.Info("stopping on request", "purge", in.Purge)
	return Empty{}, nil
}

// Bounds of RotateRequest.Timeout, the wait of `rotate --wait`: 0 means
// DefaultRotateWait. A rotation gives up on its peers after at most
// rotation.ack_timeout + complete_timeout (2 h at their maxima), so a longer
// wait would only hold a connection.
const (
	DefaultRotateWait = 5 * time.Minute // rotateHandler's default, mesh/rotate.go
	MinRotateWait     = time.Second
	MaxRotateWait     = 2 * time.Hour
)

// Validate refuses a wait out of range (a negative one started a rotation
// and waited 5 minutes).
func (r RotateRequest) Validate() error {
	if r.Timeout != 0 && (r.Timeout < MinRotateWait || r.Timeout > MaxRotateWait) {
		return fmt.Errorf("timeout: %s is out of range: use a duration between %s and %s (or 0 for the default, %s)", r.Timeout, MinRotateWait, MaxRotateWait, DefaultRotateWait)
	}
	return nil
}

// ResponseWithin lets the answer to `rotate --wait` take as long as the
// wait (control.LongPoll).
func (r RotateRequest) ResponseWithin() time.Duration {
	switch {
	case !r.Wait:
		return 0
	case r.Timeout > 0:
		return r.Timeout
	}
	return DefaultRotateWait
}
