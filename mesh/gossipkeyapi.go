package mesh

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/mesh/records"
)

// apiGossipKey installs a gossip-key bundle on the loop and, for `dcmesh
// gossip-key install --wait`, follows the rotation off the loop until
// every live site uses the new key and holds no other.
func (a *Agent) apiGossipKey(ctx context.Context, in control.GossipKeyRequest) (control.GossipKeyReply, error) {
	var epoch uint64
	var keyID string
	progress := func(rt *siteRuntime) (control.GossipKeyReply, error) {
		return gossipKeyProgress(rt, epoch, keyID), nil
	}
	r, err := call(ctx, a, func(rt *siteRuntime) (control.GossipKeyReply, error) {
		if rt.gkeys == nil {
			return control.GossipKeyReply{}, config.ErrNoGossip
		}
		if _, err := a.installGossipKey(rt, in.Bundle); err != nil {
			return control.GossipKeyReply{}, err
		}
		a.stepGossipKey(rt) // at once: with no live site there is nothing to wait for
		epoch, keyID = rt.gkeys.epoch, rt.gkeys.bundle.KeyID
		return progress(rt)
	})
	if err != nil || !in.Wait || r.Result == control.GossipKeyComplete {
		return r, err
	}
	deadline := time.NewTimer(in.WaitFor())
	defer deadline.Stop()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return control.GossipKeyReply{}, ctx.Err()
		case <-deadline.C:
			r.Result = control.GossipKeyIncomplete
			return r, nil
		case <-tick.C:
		}
		if r, err = call(ctx, a, progress); err != nil || r.Result == control.GossipKeyComplete {
			return r, err
		}
	}
}

// gossipKeyProgress says how the rotation to keyID (epoch) stands as this
// site sees it: complete once this site and every live site hold keyID
// alone.
func gossipKeyProgress(rt *siteRuntime, epoch uint64, keyID string) control.GossipKeyReply {
	gk := rt.gkeys
	r := control.GossipKeyReply{Epoch: epoch, KeyID: keyID, Result: control.GossipKeyStarted, Using: []string{}, Pending: map[string]string{}}
	_, held := rt.gossip.KeyIDs()
	switch {
	case gk.epoch != epoch:
		r.Pending[rt.nodeName()] = "holds epoch " + strconv.FormatUint(gk.epoch, 10) + " now"
	case len(held) == 1 && held[0] == keyID:
		r.Using = append(r.Using, rt.nodeName())
	default:
		r.Pending[rt.nodeName()] = "holds keys " + strings.Join(held, ", ") + " (" + gk.phase + ")"
	}
	for _, s := range liveMembers(rt) {
		ack := gk.acks[s]
		switch {
		case gk.pending[s] != "":
			r.Pending[s] = gk.pending[s]
		case ack == nil:
			r.Pending[s] = "has not said which gossip keys it holds"
		case len(ack.Held) == 1 && ack.Held[0] == keyID:
			r.Using = append(r.Using, s)
		default:
			r.Pending[s] = "holds keys " + strings.Join(ack.Held, ", ")
		}
	}
	slices.Sort(r.Using)
	if len(r.Pending) == 0 {
		r.Result, r.Pending = control.GossipKeyComplete, nil
	}
	return r
}

// gossipKeyStatus is the gossip key in status: ids, never keys.
func gossipKeyStatus(rt *siteRuntime) *control.GossipKeyStatus {
	if rt.gossip == nil || rt.gkeys == nil {
		return nil
	}
	primary, held := rt.gossip.KeyIDs()
	st := &control.GossipKeyStatus{InUse: primary, Installed: held, Epoch: rt.gkeys.epoch, Phase: rt.gkeys.phase}
	if rt.gkeys.rotating() {
		if len(rt.gkeys.pending) > 0 {
			st.Pending = rt.gkeys.pending
		}
		if !rt.gkeys.started.IsZero() {
			started := rt.gkeys.started.UTC()
			st.Started = &started
		}
	}
	if p := rt.gkeys.problem; p != "" {
		st.Pending = map[string]string{rt.nodeName(): p}
		st.Problem = p
	}
	return st
}

// greetGossipKeys hands a member that just joined this site's key list,
// and the bundle while a rotation is under way here: directly, one message
// or two per join.
func (a *Agent) greetGossipKeys(rt *siteRuntime, name string) {
	gk := rt.gkeys
	if gk == nil {
		return
	}
	ack, ok := a.gossipKeyAckMsg(rt)
	var bundle []byte
	if gk.rotating() {
		bundle = records.Encode(records.KindGossipKey, gk.bundle.Raw)
	}
	g := rt.gossip
	go func() {
		if bundle != nil {
			_ = g.SendTo(name, bundle)
		}
		if ok {
			_ = g.SendTo(name, ack)
		}
	}()
}

// gossipKeyTicker ticks while a gossip-key rotation is under way, else
// never (nil).
func gossipKeyTicker(rt *siteRuntime, t *time.Ticker) <-chan time.Time {
	if rt.gkeys == nil || !rt.gkeys.rotating() {
		return nil
	}
	return t.C
}
