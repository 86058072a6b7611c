package mesh

import (
	"errors"
	"fmt"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/gossip"
	"github.com/dcmesh/dcmesh/mesh/records"
	"github.com/dcmesh/dcmesh/mesh/trust"
)

// gkStep is what a gossip-key rotation does next.
type gkStep int

const (
	gkWait   gkStep = iota // nothing yet: Pending says for whom
	gkUse                  // every live site holds the new key: send with it
	gkRemove               // every live site sends with it, for the grace: remove the old one
)

// gkInput is what the next step is decided from.
type gkInput struct {
	Phase      string
	Epoch      uint64
	KeyID      string          // the new key's
	Recipients map[string]bool // of the bundle
	Live       []string        // remote sites alive in gossip now
	Acks       map[string]*trust.GossipKeyAck
	Since      time.Time // when every live site was first seen using the new key (zero: not yet)
	Now        time.Time
	Grace      time.Duration
}

// gkDecision is the step, the live sites it waits for (and why), and the
// new Since.
type gkDecision struct {
	Step    gkStep
	Pending map[string]string
	Since   time.Time
}

// decideGossipKey is the rotation's rule, pure: use the new key once every
// live site holds it; remove the old one once every live site sends with
// the new one, gossipKeyGrace after that was first seen. Sites that are not
// alive are not waited for: a site down during the rotation rejoins with
// the bundle installed on it (gossipkey.go).
func decideGossipKey(in gkInput) gkDecision {
	d := gkDecision{Pending: map[string]string{}}
	switch in.Phase {
	case gkInstalled:
		for _, s := range in.Live {
			a := in.Acks[s]
			switch {
			case !in.Recipients[s]:
				d.Pending[s] = fmt.Sprintf("not a recipient of bundle epoch %d (enrolled after it was sealed?): run dcmesh ca gossip-key rotate again and install the new bundle", in.Epoch)
			case a == nil:
				d.Pending[s] = "has not said which gossip keys it holds"
			case !a.Holds(in.KeyID):
				d.Pending[s] = "does not hold key " + in.KeyID + " yet"
			}
		}
		if len(d.Pending) == 0 {
			d.Step = gkUse
		}
	case gkSwitched:
		for _, s := range in.Live {
			if a := in.Acks[s]; a == nil || a.Primary() != in.KeyID {
				d.Pending[s] = "does not send with key " + in.KeyID + " yet"
			}
		}
		if len(d.Pending) > 0 {
			return d
		}
		d.Since = in.Since
		if d.Since.IsZero() {
			d.Since = in.Now
		}
		if in.Now.Sub(d.Since) >= in.Grace {
			d.Step = gkRemove
		}
	}
	return d
}

// liveSites are the remote certified sites alive in gossip now.
func liveMembers(rt *siteRuntime) []string {
	var out []string
	for _, m := range rt.gossip.Members() {
		if m.Name != rt.nodeName() && m.State == "alive" {
			out = append(out, m.Name)
		}
	}
	return out
}

// stepGossipKey decides and takes the rotation's next step.
func (a *Agent) stepGossipKey(rt *siteRuntime) {
	gk := rt.gkeys
	if gk == nil || !gk.rotating() {
		return
	}
	rec := map[string]bool{}
	for _, s := range gk.bundle.Recipients {
		rec[s] = true
	}
	d := decideGossipKey(gkInput{Phase: gk.phase, Epoch: gk.epoch, KeyID: gk.bundle.KeyID, Recipients: rec,
		Live: liveMembers(rt), Acks: gk.acks, Since: gk.since, Now: time.Now(), Grace: gossipKeyGrace})
	gk.pending, gk.since = d.Pending, d.Since
	switch d.Step {
	case gkUse:
		if err := a.setGossipKeyPhase(rt, gkSwitched, func() error { return rt.gossip.UseKey(gk.next) }); err != nil {
			a.log.Error("gossip key: cannot switch to the new key", "key_id", gk.bundle.KeyID, "err", err)
			return
		}
		a.log.Info("gossip key: every live site holds the new key; sending with it", "key_id", gk.bundle.KeyID, "epoch", gk.epoch)
	case gkRemove:
		if err := a.setGossipKeyPhase(rt, gkStable, func() error { return rt.gossip.RemoveKey(gk.cur) }); err != nil {
			a.log.Error("gossip key: cannot remove the old key", "err", err)
			return
		}
		clear(gk.cur)
		gk.cur, gk.next, gk.previous, gk.since = gk.next, nil, nil, time.Time{}
		a.log.Info("gossip key: every live site sends with the new key; the old one is removed", "key_id", gk.bundle.KeyID, "epoch", gk.epoch)
	default:
		return
	}
	a.announceGossipKeys(rt)
}

// tickGossipKey is the rotation's ticker: the next step, and while it
// waits, this site's key list broadcast again and, every 3 s, sent directly
// to the sites waited for, with the bundle to those that did not say they
// hold it (gossip does not relay these messages, so at scale a broadcast
// reaches only some sites; a direct send to all happens only on a change).
func (a *Agent) tickGossipKey(rt *siteRuntime) {
	a.stepGossipKey(rt)
	gk := rt.gkeys
	if !gk.rotating() {
		return
	}
	msg, ok := a.gossipKeyAckMsg(rt)
	if !ok {
		return
	}
	rt.gossip.Broadcast("gossip-key-ack/"+rt.nodeName(), msg)
	if time.Since(gk.sentAt) < 3*time.Second {
		return
	}
	gk.sentAt = time.Now()
	g := rt.gossip
	for site := range gk.pending {
		a.resendGossipKey(rt, site)
		go func() { _ = g.SendTo(site, msg) }()
	}
}

// setGossipKeyPhase persists phase and then changes the keyring (a
// restart resumes from the file: persisting "switched" before UseKey means
// a crash in between sends with the new key, which every live site holds).
func (a *Agent) setGossipKeyPhase(rt *siteRuntime, phase string, change func() error) error {
	gk := rt.gkeys
	was, prev := gk.phase, gk.previous
	gk.phase = phase
	if phase == gkStable {
		gk.previous = nil
	}
	if err := rt.disk.wrote(config.GossipKeyState, gk.save()); err != nil {
		gk.phase, gk.previous = was, prev
		return fmt.Errorf("persist %s: %w", gk.file, err)
	}
	if err := change(); err != nil {
		gk.phase, gk.previous = was, prev
		return err
	}
	return nil
}

// announceGossipKeys tells the cluster, signed, which gossip keys this site
// holds, now that they changed: broadcast, and to every member directly.
func (a *Agent) announceGossipKeys(rt *siteRuntime) {
	msg, ok := a.gossipKeyAckMsg(rt)
	if !ok {
		return
	}
	rt.gossip.Broadcast("gossip-key-ack/"+rt.nodeName(), msg)
	rt.gkeys.sentAt = time.Now()
	a.sendToAllAsync(rt, msg, "gossip key list")
}

// gossipKeyAckMsg signs this site's key list as a gossip message.
func (a *Agent) gossipKeyAckMsg(rt *siteRuntime) ([]byte, bool) {
	gk := rt.gkeys
	_, held := rt.gossip.KeyIDs()
	gk.ackSeq = trust.NextSeq(gk.ackSeq, time.Now())
	raw, err := trust.SignGossipKeyAck(trust.GossipKeyAck{Site: rt.nodeName(), Seq: gk.ackSeq, Epoch: gk.epoch, Held: held}, rt.enr.Identity)
	if err != nil {
		a.log.Error("gossip key: cannot sign this site's key list", "err", err)
		return nil, false
	}
	return records.Encode(records.KindGossipKeyAck, raw), true
}

// broadcastOrSend broadcasts msg under key when it fits in a packet, and
// sends it to every member directly.
func (a *Agent) broadcastOrSend(rt *siteRuntime, key string, msg []byte, what string) {
	if len(msg) <= gossip.MaxBroadcastSize {
		rt.gossip.Broadcast(key, msg)
	}
	a.sendToAllAsync(rt, msg, what)
}

// onGossipKeyAck takes a site's signed key list: the newest of each site is
// kept, and the rotation re-evaluated. A site that holds an older epoch is
// sent the bundle directly (it may have missed the broadcast).
func (a *Agent) onGossipKeyAck(rt *siteRuntime, raw []byte) {
	gk := rt.gkeys
	ack, err := trust.DecodeGossipKeyAck(raw)
	if err != nil {
		rt.store.Reject("(gossip key ack)", err)
		return
	}
	sr, ok := rt.store.Record(ack.Site)
	if !ok || ack.Site == rt.nodeName() {
		return
	}
	if old := gk.acks[ack.Site]; old != nil && old.Seq >= ack.Seq {
		return
	}
	if _, err := trust.VerifyGossipKeyAck(raw, sr.Cert.IdentityKey); err != nil {
		rt.store.Reject(ack.Site, err)
		return
	}
	gk.acks[ack.Site] = ack
	a.resendGossipKey(rt, ack.Site)
	a.answerGossipKeyAck(rt, ack)
	a.stepGossipKey(rt)
}

// answerGossipKeyAck sends this site's key list, while it is not rotating
// itself, directly to a site that is (it holds two keys) or that is on
// another epoch, at most every 2 s: a site that was down and now rotates
// alone waits for the key lists of the sites it finds, which outside a
// rotation announce nothing by themselves. Sites that rotate together
// announce anyway.
func (a *Agent) answerGossipKeyAck(rt *siteRuntime, ack *trust.GossipKeyAck) {
	gk := rt.gkeys
	if gk.rotating() || (len(ack.Held) < 2 && ack.Epoch == gk.epoch) || time.Since(gk.answered[ack.Site]) < 2*time.Second {
		return
	}
	msg, ok := a.gossipKeyAckMsg(rt)
	if !ok {
		return
	}
	gk.answered[ack.Site] = time.Now()
	g := rt.gossip
	go func() { _ = g.SendTo(ack.Site, msg) }()
}

// bundleReason words a bundle's refusal in the records' reasons, as
// counted in records_rejected: an older epoch is a replay (gossip delivers
// old copies; logged at debug), anything else decode.
func bundleReason(err error) error {
	if errors.Is(err, trust.ErrStaleGossipKey) {
		return &trust.RejectError{Reason: trust.ReasonReplay, Detail: err.Error()}
	}
	return err
}

// resendGossipKey sends the bundle held directly to a site that did not
// say it holds its epoch (the broadcast and the first direct send may both
// have been lost), at most every 5 s.
func (a *Agent) resendGossipKey(rt *siteRuntime, site string) {
	gk := rt.gkeys
	if ack := gk.acks[site]; gk.bundle == nil || (ack != nil && ack.Epoch >= gk.epoch) || time.Since(gk.resent[site]) < 5*time.Second {
		return
	}
	gk.resent[site] = time.Now()
	g, msg := rt.gossip, records.Encode(records.KindGossipKey, gk.bundle.Raw)
	go func() { _ = g.SendTo(site, msg) }()
}

// onGossipKeyBundle takes a bundle from gossip; refusals are counted like
// those of records (and remembered by hash, so repeats cost a lookup).
func (a *Agent) onGossipKeyBundle(rt *siteRuntime, der []byte) {
	changed, err := a.installGossipKeyFrom(rt, der, true)
	if errors.Is(err, errGossipKeyLimited) {
		return // not counted as a refusal: it was not looked at
	}
	if err != nil {
		rt.store.Reject("(gossip key bundle)", bundleReason(err))
		a.log.Debug("gossip key bundle from gossip refused", "err", err)
	}
	if changed {
		a.stepGossipKey(rt) // the others' key lists may all be in already
	}
}
