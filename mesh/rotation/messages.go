package rotation

import (
	"slices"
	"time"

	"github.com/dcmesh/dcmesh/mesh/records"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/wg"
)

// The messages of a rotation between sites (rotate.go has the protocol):
// signed acks from the peers to the rotating site (pre-installed, cut over),
// and the rotating site's unsigned "switching now" notice.

// OnAck records a peer's acknowledgement of our new key: ack is verified
// (signed by the site it names, for us), and peerKey is that site's current
// WireGuard key.
func (r *Rotator) OnAck(ack *trust.Ack, peerKey wg.PublicKey) {
	if r.run == nil || ack.Key != r.run.key {
		return
	}
	switch ack.Stage {
	case trust.AckPreinstalled:
		r.acceptPSK(ack, peerKey)
		if !r.run.pre[ack.From] {
			r.run.pre[ack.From] = true
			r.log.Debug("rotation: peer pre-installed the new key", "peer", ack.From)
			r.maybeSwitch()
		}
	case trust.AckCutOver:
		if !r.run.cut[ack.From] {
			r.run.cut[ack.From] = true
			r.run.pre[ack.From] = true
			r.log.Debug("rotation: peer cut over and received under the new key", "peer", ack.From)
			r.pollConfirmations()
		}
	}
}

// afterApply acks what the last successful reconcile did for rotating
// sites: pre-installs, and new keys that now carry a site's prefixes (acked
// once we received data under them, confirm.go).
func (r *Rotator) afterApply(sites []records.Site) {
	if !r.online {
		return
	}
	pr := r.peerRotations()
	for _, s := range sites {
		if s.Next.IsZero() || r.cutover[s.Next] {
			continue
		}
		if _, held := pr.held[s.Node()]; held {
			continue // switched: nothing to pre-install
		}
		if r.ackedPre[s.Node()] != s.Seq {
			r.ackedPre[s.Node()] = s.Seq
			r.sendAck(s, s.Next, trust.AckPreinstalled)
		}
	}
	// A site whose prefixes moved to another key (it switched, or rotated
	// in an emergency): we replaced the old key; ack that once confirmed.
	carried := map[wg.PublicKey]bool{}
	for _, s := range sites {
		key := r.carrier(s)
		carried[key], carried[s.Next] = true, true
		old, known := r.siteKeys[s.Node()]
		r.siteKeys[s.Node()] = key
		if known && old != key {
			r.newKeyCarried(s, key)
		}
	}
	for k := range r.cutover {
		if !slices.ContainsFunc(sites, func(s records.Site) bool { return s.Next == k }) {
			delete(r.cutover, k)
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

func (r *Rotator) sendAck(s records.Site, key wg.PublicKey, stage trust.AckStage) {
	ack := trust.Ack{From: r.nodeName(), To: s.Node(), Key: key, Stage: stage, Seq: s.Seq}
	if stage == trust.AckPreinstalled {
		ack.KEMCiphertext = r.pskOffers[key].ciphertext
	}
	b, err := trust.SignAck(ack, r.identity)
	if err != nil {
		r.log.Error("cannot sign an ack", "err", err)
		return
	}
	r.sendAsync(s.Node(), records.Encode(records.KindAck, b), "ack")
}

// sendAsync sends msg to site name directly, off the loop (an unreachable
// member costs a TCP timeout); what names it in the log.
func (r *Rotator) sendAsync(name string, msg []byte, what string) {
	go func() {
		if err := r.env.SendTo(name, msg); err != nil {
			r.log.Debug(what+" not delivered", "to", name, "err", err)
		}
	}()
}

// notifySwitching tells the peers to watch closely before we switch: each
// packet we send under the new key before a peer cuts over is dropped by
// that peer. It waits for the notices to go out, at most switchNoticeWait
// (a peer that does not take one in time still has the regular poll).
func (r *Rotator) notifySwitching() {
	if r.run == nil || len(r.run.expected) == 0 {
		return
	}
	done := make(chan struct{}, len(r.run.expected))
	msg := records.Encode(records.KindSwitching, []byte(r.nodeName()))
	for _, name := range r.run.expected {
		go func() {
			_ = r.env.SendTo(name, msg)
			done <- struct{}{}
		}()
	}
	timeout := time.After(switchNoticeWait)
	for range r.run.expected {
		select {
		case <-done:
		case <-timeout:
			return
		}
	}
}

// OnSwitching starts fast polling: a rotating site is about to switch. The
// notice is unsigned: all it can do is make us poll faster for a moment.
func (r *Rotator) OnSwitching() {
	if r.watch != nil {
		r.watch.fast(time.Now().Add(fastPollWindow))
	}
}
