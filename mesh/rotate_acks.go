package mesh

import (
	"slices"
	"time"

	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/wg"
)

// The messages of a rotation between sites (rotate.go has the protocol):
// signed acks from the peers to the rotating site (pre-installed, cut over),
// and the rotating site's unsigned "switching now" notice.

// onAck records a peer's acknowledgement of our new key.
func (a *Agent) onAck(rt *runtime, raw []byte) {
	ack, err := trust.DecodeAck(raw)
	if err != nil {
		rt.store.reject("(ack)", err)
		return
	}
	sr, ok := rt.store.records[ack.From]
	if !ok || ack.To != rt.cfg.Site {
		return
	}
	if _, err := trust.VerifyAck(raw, sr.Cert.IdentityKey); err != nil {
		rt.store.reject(ack.From, err)
		return
	}
	if rt.run == nil || ack.Key != rt.run.key {
		return
	}
	switch ack.Stage {
	case trust.AckPreinstalled:
		a.acceptPSK(rt, ack, sr.WGCurrent)
		if !rt.run.pre[ack.From] {
			rt.run.pre[ack.From] = true
			a.log.Debug("rotation: peer pre-installed the new key", "peer", ack.From)
			a.maybeSwitch(rt)
		}
	case trust.AckCutOver:
		if !rt.run.cut[ack.From] {
			rt.run.cut[ack.From] = true
			rt.run.pre[ack.From] = true
			a.log.Debug("rotation: peer cut over and received under the new key", "peer", ack.From)
			a.pollConfirmations(rt)
		}
	}
}

// afterApply acks what the last successful reconcile did for rotating
// sites: pre-installs, and new keys that now carry a site's prefixes (acked
// once we received data under them, confirm.go).
func (a *Agent) afterApply(rt *runtime, sites []remoteSite) {
	if rt.gossip == nil {
		return
	}
	pr := rt.peerRotations()
	for _, s := range sites {
		if s.Next.IsZero() || rt.cutover[s.Next] {
			continue
		}
		if _, held := pr.held[s.Name]; held {
			continue // switched: nothing to pre-install
		}
		if rt.ackedPre[s.Name] != s.Seq {
			rt.ackedPre[s.Name] = s.Seq
			a.sendAck(rt, s, s.Next, trust.AckPreinstalled)
		}
	}
	// A site whose prefixes moved to another key (it switched, or rotated
	// in an emergency): we replaced the old key; ack that once confirmed.
	carried := map[wg.PublicKey]bool{}
	for _, s := range sites {
		key := carrier(rt, s)
		carried[key], carried[s.Next] = true, true
		old, known := rt.siteKeys[s.Name]
		rt.siteKeys[s.Name] = key
		if known && old != key {
			a.newKeyCarried(rt, s, key)
		}
	}
	for k := range rt.cutover {
		if !slices.ContainsFunc(sites, func(s remoteSite) bool { return s.Next == k }) {
			delete(rt.cutover, k)
		}
	}
	for k := range pr.confirmed {
		if !carried[k] {
			delete(pr.confirmed, k)
		}
	}
	for k := range pr.confirming {
		if !carried[k] {
			delete(pr.confirming, k)
		}
	}
}

func (a *Agent) sendAck(rt *runtime, s remoteSite, key wg.PublicKey, stage trust.AckStage) {
	ack := trust.Ack{From: rt.cfg.Site, To: s.Name, Key: key, Stage: stage, Seq: s.Seq}
	if stage == trust.AckPreinstalled {
		ack.KEMCiphertext = rt.pskOffers[key].ciphertext
	}
	b, err := trust.SignAck(ack, rt.enr.Identity)
	if err != nil {
		a.log.Error("cannot sign an ack", "err", err)
		return
	}
	g, name := rt.gossip, s.Name
	go func() {
		if err := g.SendTo(name, append([]byte{msgAck}, b...)); err != nil {
			a.log.Debug("ack not delivered", "to", name, "err", err)
		}
	}()
}

// notifySwitching tells the peers to watch closely before we switch: each
// packet we send under the new key before a peer cuts over is dropped by
// that peer. It waits for the notices to go out, at most switchNoticeWait
// (a peer that does not take one in time still has the regular poll).
func (a *Agent) notifySwitching(rt *runtime) {
	if rt.run == nil || len(rt.run.expected) == 0 {
		return
	}
	done := make(chan struct{}, len(rt.run.expected))
	msg := append([]byte{msgSwitching}, rt.cfg.Site...)
	for _, name := range rt.run.expected {
		g, name := rt.gossip, name
		go func() {
			_ = g.SendTo(name, msg)
			done <- struct{}{}
		}()
	}
	timeout := time.After(switchNoticeWait)
	for range rt.run.expected {
		select {
		case <-done:
		case <-timeout:
			return
		}
	}
}

// onSwitching starts fast polling: a rotating site is about to switch. The
// notice is unsigned: all it can do is make us poll faster for a moment.
func (a *Agent) onSwitching(rt *runtime) {
	if rt.watch != nil {
		rt.watch.fast(time.Now().Add(fastPollWindow))
	}
}
