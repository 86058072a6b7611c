package rotation

import (
	"time"

	"github.com/dcmesh/dcmesh/mesh/records"
	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/wg"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// What a rotation confirms, and how (rotate.go has the protocol).
//
// Only the rotating site initiates handshakes under its new key: its switch
// makes the device send every peer a keepalive (wg.SwitchKey), and the
// peers, which hold the key pre-installed with no allowed IPs and no
// keepalive, only answer. Two crossing initiations cancel each other in
// WireGuard (each side's response is refused as invalid and the pair is
// silent until the 5 s retry), so a peer does not cut over from the switched
// record alone while a handshake from the new key may still be on its way:
// it keeps routing to the old key — whose session the rotating site still
// decrypts — for SwitchGrace, and cuts over from the record only if no
// handshake came by then.
//
// A rotation is complete when every live peer carried data both ways under
// the new key:
//
//   - the peer cut over and received data under the new key. Its signed
//     cut-over ack says so. A cut-over at the handshake (cutover.go) proves
//     it at once: the peer was the responder, and a responder completes the
//     handshake only on the initiator's first data packet. Any other
//     cut-over (from the record, or an emergency rotation) is confirmed by
//     asking the rotating site for a keepalive (a nudge) and seeing the
//     peer's received bytes on the new key grow;
//   - the rotating site sees a handshake with the peer after its switch and
//     received data from it after its ack: the peer dropped the old key
//     before acking, so what arrives after the ack came under the new key.
//     The rotating site nudges the peer for a keepalive when the ack comes,
//     so an idle tunnel confirms as fast as a busy one.
//
// A nudge is an unsigned gossip message naming its sender; all it can make
// a site do is send that site one keepalive, at most every nudgeInterval.

const (
	// SwitchGrace is how long a peer keeps routing to a site's old key after
	// the site's record says it switched, waiting for the handshake the
	// site's switch started (sub-millisecond to a few RTTs; lost, it is
	// retried only after 5 s).
	SwitchGrace = 2 * time.Second
	// confirmPoll is how often the device is read while a confirmation is
	// pending.
	confirmPoll = 10 * time.Millisecond
	// nudgeInterval bounds how often a site asks, or answers, a nudge.
	nudgeInterval = 500 * time.Millisecond
	// confirmGiveUp bounds how long a peer tries to confirm a new key.
	confirmGiveUp = 2 * time.Minute
)

// peerRotations is what this site tracks about other sites' rotations.
type peerRotations struct {
	// preinstalled is, per site whose record announced a next key, its
	// current and next key as last seen.
	preinstalled map[string]keyPair
	// held are sites whose record switched to a key we pre-installed, with
	// when we saw it, until a handshake under the new key or SwitchGrace.
	held map[string]time.Time
	// confirmed are new keys we received data under since cutting over.
	confirmed map[wg.PublicKey]bool
	// confirming are new keys we cut over to without that proof yet.
	confirming map[wg.PublicKey]*confirmingKey
	// answered is when we last sent each site a keepalive it asked for.
	answered map[string]time.Time
}

type keyPair struct{ cur, next wg.PublicKey }

// confirmingKey is a new key of site waiting for data received under it.
type confirmingKey struct {
	site   records.Site
	since  time.Time
	rxBase int64     // received bytes when we asked for a keepalive
	asked  time.Time // zero until the device showed a handshake
}

func (r *Rotator) peerRotations() *peerRotations {
	if r.peerRot == nil {
		r.peerRot = &peerRotations{preinstalled: map[string]keyPair{}, held: map[string]time.Time{},
			confirmed: map[wg.PublicKey]bool{}, confirming: map[wg.PublicKey]*confirmingKey{}, answered: map[string]time.Time{}}
	}
	return r.peerRot
}

// markCutOver records a cut-over the watcher made: done on the device
// (never to be undone by a reconcile) and confirmed.
func (r *Rotator) markCutOver(k wg.PublicKey) {
	r.cutover[k] = true
	r.peerRotations().confirmed[k] = true
}

// holdSwitches rewrites, in sites, each site whose record switched to a key
// we pre-installed but saw no handshake on yet back to "rotating": the old
// key keeps the prefixes and the new one stays pre-installed, until the
// watcher sees the handshake or SwitchGrace passes.
func (r *Rotator) holdSwitches(sites []records.Site) {
	pr := r.peerRotations()
	now := r.now()
	seen := map[string]bool{}
	for i := range sites {
		s := &sites[i]
		seen[s.Node()] = true
		if !s.Next.IsZero() {
			pr.preinstalled[s.Node()] = keyPair{cur: s.PublicKey, next: s.Next}
			delete(pr.held, s.Node())
			continue
		}
		p, ok := pr.preinstalled[s.Node()]
		if !ok || p.next != s.PublicKey || r.cutover[p.next] {
			delete(pr.preinstalled, s.Node())
			delete(pr.held, s.Node())
			continue
		}
		since, held := pr.held[s.Node()]
		if !held {
			since = now
			pr.held[s.Node()] = now
			time.AfterFunc(SwitchGrace, func() { r.env.Kick() })
		}
		if now.Sub(since) >= SwitchGrace {
			r.log.Warn("rotation: no handshake under a site's new key since its record said it switched; cutting over from the record",
				"site", s.Node(), "key", s.PublicKey.Short(), "waited", SwitchGrace)
			delete(pr.preinstalled, s.Node())
			delete(pr.held, s.Node())
			continue
		}
		s.PublicKey, s.Next = p.cur, p.next
	}
	for name := range pr.preinstalled {
		if !seen[name] {
			delete(pr.preinstalled, name)
			delete(pr.held, name)
		}
	}
}

// carrier is the key that carries s's prefixes on our device.
func (r *Rotator) carrier(s records.Site) wg.PublicKey {
	if !s.Next.IsZero() && r.cutover[s.Next] {
		return s.Next
	}
	return s.PublicKey
}

// newKeyCarried handles a site whose prefixes just moved to key: ack the
// cut-over if we already received data under it, else start confirming.
func (r *Rotator) newKeyCarried(s records.Site, key wg.PublicKey) {
	pr := r.peerRotations()
	if pr.confirmed[key] {
		r.ackCutOver(s, key)
		return
	}
	if _, ok := pr.confirming[key]; !ok {
		pr.confirming[key] = &confirmingKey{site: s, since: time.Now()}
	}
}

func (r *Rotator) ackCutOver(s records.Site, key wg.PublicKey) {
	if r.ackedCut[key] {
		return
	}
	r.ackedCut[key] = true
	r.sendAck(s, key, trust.AckCutOver)
}

// pollConfirmations reads the device once for every pending confirmation,
// ours (a rotation of this site) and our peers' new keys.
func (r *Rotator) pollConfirmations() {
	pr := r.peerRotations()
	if len(pr.confirming) == 0 && (r.run == nil || !r.run.switchedOver()) {
		return
	}
	dev, err := r.readDevices()
	if err != nil {
		r.log.Debug("rotation: cannot read the device to confirm", "err", err)
		return
	}
	now := time.Now()
	for key, c := range pr.confirming {
		p := devicePeer(dev, key)
		switch {
		case p == nil || now.Sub(c.since) > confirmGiveUp:
			delete(pr.confirming, key)
			if p != nil {
				r.log.Warn("rotation: received nothing under a site's new key; not acknowledging its cut-over", "site", c.site.Node(), "key", key.Short())
			}
		case p.LastHandshakeTime.IsZero():
		case p.ReceiveBytes < c.rxBase: // the counter restarted
			c.rxBase = p.ReceiveBytes
		case c.asked.IsZero() || (p.ReceiveBytes == c.rxBase && now.Sub(c.asked) > nudgeInterval):
			c.rxBase, c.asked = p.ReceiveBytes, now
			r.nudge(c.site.Node())
		case p.ReceiveBytes > c.rxBase:
			delete(pr.confirming, key)
			pr.confirmed[key] = true
			r.ackCutOver(c.site, key)
		}
	}
	if r.run != nil && r.run.switchedOver() {
		r.confirmOwn(dev, now)
	}
}

// confirmOwn advances this site's rotation: a peer that acked its cut-over
// is confirmed once the device shows a handshake with it since the switch
// and bytes received from it since the ack.
func (r *Rotator) confirmOwn(dev *wgtypes.Device, now time.Time) {
	run := r.run
	changed := false
	for _, name := range run.expected {
		if run.ok[name] {
			continue
		}
		hs, rx, found := r.siteTraffic(dev, name)
		if !found || !run.cut[name] || !hs.After(run.switched) {
			continue
		}
		base, asked := run.rxBase[name]
		switch {
		case asked && rx < base: // a peer entry of the site was replaced
			run.rxBase[name] = rx
		case !asked || (rx == base && now.Sub(run.asked[name]) > nudgeInterval):
			if !asked {
				run.rxBase[name] = rx
			}
			run.asked[name] = now
			r.nudge(name)
		case rx > base:
			run.ok[name] = true
			changed = true
		}
	}
	if changed {
		r.maybeComplete()
	}
}

// whyUnconfirmed says what is missing for a peer of this site's rotation.
func (r *Rotator) whyUnconfirmed(dev *wgtypes.Device, name string) string {
	run := r.run
	hs, _, found := r.siteTraffic(dev, name)
	switch {
	case dev != nil && !found:
		return "not a peer on the device"
	case dev != nil && !hs.After(run.switched):
		return "no handshake under the new key"
	case !run.cut[name]:
		return "has not confirmed receiving data under the new key"
	default:
		return "nothing received from it since its cut-over"
	}
}

// siteTraffic is the latest handshake and the received bytes of the peers
// that are site name's keys on dev (its current one, and its next one if it
// rotates too).
func (r *Rotator) siteTraffic(dev *wgtypes.Device, name string) (hs time.Time, rx int64, found bool) {
	if dev == nil {
		return hs, rx, false
	}
	for _, s := range r.sites {
		if s.Node() != name {
			continue
		}
		for _, k := range []wg.PublicKey{s.PublicKey, s.Next} {
			if p := devicePeer(dev, k); p != nil && !k.IsZero() {
				found = true
				rx += p.ReceiveBytes
				if p.LastHandshakeTime.After(hs) {
					hs = p.LastHandshakeTime
				}
			}
		}
	}
	return hs, rx, found
}

func devicePeer(dev *wgtypes.Device, k wg.PublicKey) *wgtypes.Peer {
	for i := range dev.Peers {
		if wg.PublicKey(dev.Peers[i].PublicKey) == k {
			return &dev.Peers[i]
		}
	}
	return nil
}

// nudge asks site name to send us a keepalive under the key it uses for us.
func (r *Rotator) nudge(name string) {
	if !r.online {
		return
	}
	r.sendAsync(name, records.Encode(records.KindNudge, []byte(r.nodeName())), "nudge")
}

// OnNudge sends the site that asked one keepalive on the key that carries
// its prefixes.
func (r *Rotator) OnNudge(from string) {
	pr := r.peerRotations()
	if now := time.Now(); now.Sub(pr.answered[from]) < nudgeInterval/2 {
		return
	} else {
		pr.answered[from] = now
	}
	for _, s := range r.sites {
		if s.Node() == from {
			if err := wg.SendKeepalive(r.wgc, r.interfaceOf(s), r.carrier(s)); err != nil {
				r.log.Debug("cannot send the keepalive a site asked for", "site", from, "err", err)
			}
			return
		}
	}
}

// confirmDue is when pollConfirmations must run next, zero for never.
func (r *Rotator) confirmDue() time.Time {
	if (r.peerRot != nil && len(r.peerRot.confirming) > 0) || (r.run != nil && r.run.switchedOver()) {
		return time.Now().Add(confirmPoll)
	}
	return time.Time{}
}
