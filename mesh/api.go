package mesh

import (
	"context"
	"encoding/pem"
	"fmt"
	"net/http"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/mesh/trust"
)

// The control API (mesh/control declares its calls and wire types). Every
// call runs on the agent's loop goroutine, so it sees and changes the
// runtime without locks.

// apiCall is a function for the loop to run; fn keeps its own result and
// the loop sends fn's error on reply.
type apiCall struct {
	fn    func(rt *siteRuntime) error
	reply chan error
}

// call runs fn on the loop and waits for its answer.
func call[T any](ctx context.Context, a *Agent, fn func(rt *siteRuntime) (T, error)) (T, error) {
	var out, zero T
	c := apiCall{fn: func(rt *siteRuntime) error {
		v, err := fn(rt)
		out = v // read by the caller only after reply
		return err
	}, reply: make(chan error, 1)}
	select {
	case a.api <- c:
	case <-ctx.Done():
		return zero, ctx.Err()
	}
	select {
	case err := <-c.reply:
		return out, err
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// serve registers f for e, to run on the loop.
func serve[In, Out any](a *Agent, mux *http.ServeMux, e control.Endpoint[In, Out], f func(rt *siteRuntime, in In) (Out, error)) {
	control.Serve(mux, e, func(ctx context.Context, in In) (Out, error) {
		return call(ctx, a, func(rt *siteRuntime) (Out, error) { return f(rt, in) })
	})
}

func (a *Agent) handler() http.Handler {
	mux := http.NewServeMux()
	serve(a, mux, control.EndpointStatus, a.apiStatus)
	serve(a, mux, control.EndpointHealth, a.apiHealth)
	serve(a, mux, control.EndpointRecords, a.apiRecords)
	serve(a, mux, control.EndpointLeave, a.apiLeave)
	serve(a, mux, control.EndpointRevoke, a.apiRevoke)
	serve(a, mux, control.EndpointDown, a.apiDown)
	serve(a, mux, control.EndpointRenew, a.apiRenew)
	control.Serve(mux, control.EndpointRotate, a.apiRotate) // waits off the loop
	control.Serve(mux, control.EndpointGossipKey, a.apiGossipKey)
	control.Serve(mux, control.EndpointDrain, a.apiDrain) // waits off the loop
	serve(a, mux, control.EndpointUndrain, a.apiUndrain)
	return mux
}

func (a *Agent) apiStatus(rt *siteRuntime, _ control.Empty) (control.Status, error) {
	return a.buildStatus(rt)
}

func (a *Agent) apiHealth(rt *siteRuntime, _ control.Empty) (control.Health, error) {
	st, err := a.buildStatus(rt)
	if err != nil {
		return control.Health{}, err
	}
	stuck := rt.cfg.Rotation.AckTimeout + rt.cfg.Rotation.CompleteTimeout
	if !rt.rot.Rotating() || time.Since(rt.rot.State().Started) < stuck {
		stuck = 0 // not stuck (yet)
	}
	interval := rt.cfg.Rotation.Interval
	if rt.rot.NextRotation().IsZero() {
		interval = 0
	}
	return control.EvaluateHealth(st, interval, stuck, time.Now()), nil
}

func (a *Agent) apiRecords(rt *siteRuntime, _ control.Empty) (control.Records, error) {
	var out control.Records
	if rt.store == nil {
		return out, config.ErrNoGossip
	}
	if rt.own != nil {
		out.Records = append(out.Records, rt.own.Raw)
	}
	for _, n := range rt.store.Names() {
		sr, _ := rt.store.Record(n)
		out.Records = append(out.Records, sr.Raw)
	}
	return out, nil
}

// apiLeave publishes a signed goodbye, tells the cluster, and ends the
// agent. Other sites remove this site's peer and routes.
func (a *Agent) apiLeave(rt *siteRuntime, _ control.Empty) (control.Empty, error) {
	if rt.gossip == nil {
		return control.Empty{}, config.ErrNoGossip
	}
	if err := a.publishGoodbye(rt); err != nil {
		return control.Empty{}, err
	}
	// Give the broadcast a few gossip rounds before announcing the leave.
	time.Sleep(time.Second)
	if err := rt.gossip.Leave(5 * time.Second); err != nil {
		a.log.Warn("gossip leave incomplete", "err", err)
	}
	a.log.Info("left the mesh; stopping", "site", rt.cfg.Site)
	rt.stop = true
	return control.Empty{}, nil
}

func (a *Agent) apiRevoke(rt *siteRuntime, in control.RevokeRequest) (control.RevokeReply, error) {
	if rt.store == nil {
		return control.RevokeReply{}, config.ErrNoGossip
	}
	der := in.CRL
	if b, _ := pem.Decode(in.CRL); b != nil {
		der = b.Bytes
	}
	crl, err := trust.ParseRevocationList(der, rt.enr.CAs)
	if err != nil {
		return control.RevokeReply{}, err
	}
	if changed, gone := rt.store.InstallCRL(crl); changed {
		for _, name := range gone {
			rt.gossip.Forget(name) // revoked: stop re-joining it
		}
		a.log.Info("revocation list installed", "number", crl.Number.String(), "revoked", len(crl.Serials))
		a.spreadCRL(rt)
		a.commitStore(rt)
	}
	held := rt.store.Revocations().For(crl.Issuer) // the newest list of that CA
	if held == nil {
		held = crl
	}
	return control.RevokeReply{Number: held.Number.String(), Revoked: len(held.Serials)}, nil
}

func (a *Agent) apiDown(rt *siteRuntime, in control.DownRequest) (control.Empty, error) {
	rt.stop, rt.purge = true, in.Purge
	a.log.Info("stopping on request", "purge", in.Purge)
	return control.Empty{}, nil
}

// apiRotate starts a rotation on the loop and, for `rotate --wait`, waits
// for its end off the loop.
func (a *Agent) apiRotate(ctx context.Context, in control.RotateRequest) (control.RotateReply, error) {
	wait := make(chan control.RotateReply, 1)
	started, err := call(ctx, a, func(rt *siteRuntime) (control.RotateReply, error) {
		return rt.rot.Request(in.Emergency, wait)
	})
	if err != nil {
		return control.RotateReply{}, err
	}
	if !in.Wait || started.Result != control.RotateStarted {
		return started, nil
	}
	timeout := in.WaitFor()
	select {
	case r := <-wait:
		return r, nil
	case <-time.After(timeout):
		return control.RotateReply{}, fmt.Errorf("rotation still under way after %s (see the agent's log)", timeout)
	case <-ctx.Done():
		return control.RotateReply{}, ctx.Err()
	}
}
