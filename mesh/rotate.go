package mesh

import (
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/wg"
)

// Key rotation, make-before-break, on one interface.
//
// The rotating site A (A1 → A2):
//  1. prepare: A2 is written to disk, then announced in A's record as next;
//  2. every peer B pre-installs A2 with A's endpoint and no allowed IPs (it
//     completes handshakes but carries nothing) and acks, signed;
//  3. switch: when every live peer acked, or after rotation.ack_timeout, A
//     persists "switching", gives the device A2 in one call that also
//     re-sets keepalives (which starts handshakes under A2 at once),
//     persists "switched", replaces A1 on disk and announces current=A2;
//  4. each B cuts over in one device call — A2 takes A's prefixes (the
//     kernel moves them atomically), A1 goes — as soon as it sees a
//     completed handshake on A2 (polled every 10 ms while waiting, 1 ms
//     after A's "switching now" notice), or switchGrace after A's new record
//     if no handshake came, and acks the cut-over once it received data
//     under A2;
//  5. A's rotation completes when every live peer acked and A received data
//     from it since (confirm.go).
// An emergency rotation (suspected compromise) skips the wait: A switches at
// once and announces current=A2, and every peer drops A1 on receipt.

const (
	// handshakePoll is how often a peer checks for a handshake on a
	// pre-installed key while one is pending (never otherwise): until it
	// cuts over, the rotating site's packets under the new key are dropped,
	// so this bounds the loss in that direction (2 packets at 200/s).
	handshakePoll = 10 * time.Millisecond
	// fastPoll is the poll interval for a short while after a rotating site
	// says it is switching now: the cut-over then follows the handshake
	// within a millisecond or two.
	fastPoll       = time.Millisecond
	fastPollWindow = 2 * time.Second
	// switchNoticeWait bounds how long the switch waits for its notices.
	switchNoticeWait = 250 * time.Millisecond
	// rotationJitter spreads scheduled rotations of sites started together.
	rotationJitter = 0.1
)

// rotationRun is the rotating site's view of a rotation in flight.
type rotationRun struct {
	key      wg.PublicKey // the new key
	seq      uint64       // the record that announced it
	expected []string     // live remote sites when the rotation began
	pre, cut map[string]bool
	psk      map[string]wg.PresharedKey // agreed per site (psk.go)
	deadline time.Time                  // for acks before the switch, for cut-overs after
	waiters  []chan control.RotateReply

	// after the switch (confirm.go)
	committed bool                 // the new key is current on disk and announced
	switched  time.Time            // when the device got the new key
	ok        map[string]bool      // sites that carried data both ways under it
	rxBase    map[string]int64     // received bytes from a site when its cut-over ack came
	asked     map[string]time.Time // when we last nudged a site for a keepalive
}

func newRotationRun(rt *runtime, key wg.PublicKey, deadline time.Time) *rotationRun {
	run := &rotationRun{key: key, seq: rt.seq, pre: map[string]bool{}, cut: map[string]bool{}, psk: map[string]wg.PresharedKey{},
		deadline: deadline, ok: map[string]bool{}, rxBase: map[string]int64{}, asked: map[string]time.Time{}}
	return run
}

// switchedOver reports whether the run waits for confirmations.
func (r *rotationRun) switchedOver() bool { return r.committed && len(r.missing()) > 0 }

// loadKeys reads the WireGuard keys and rotation state, and picks the key
// the device must use: the next key from the moment the switch was
// persisted.
func (a *Agent) loadKeys(rt *runtime) error {
	rt.keys = wg.NewKeyStore(rt.cfg.PrivateKeyFile, rt.cfg.StateDir.Rotation())
	cur, next, st, err := rt.keys.Load()
	if err != nil {
		return fmt.Errorf("private_key_file: %w", err)
	}
	rt.rot, rt.key, rt.next = st, cur, next
	if (st.Phase == wg.PhaseSwitching || st.Phase == wg.PhaseSwitched) && !next.IsZero() {
		rt.key, rt.next = next, wg.PrivateKey{}
	}
	if st.Phase != wg.PhaseStable {
		a.log.Info("resuming a key rotation interrupted by a restart", "phase", string(st.Phase), "epoch", st.Epoch)
	}
	for i, p := range rt.cfg.Peers {
		if p.PublicKey == rt.key.Public() {
			return fmt.Errorf("config %s: peers[%d].public_key is this site's own public key (from %s)", rt.cfg.Path, i, rt.cfg.PrivateKeyFile)
		}
	}
	return nil
}

// resumeRotation finishes what a restart interrupted, once the device and
// gossip are up.
func (a *Agent) resumeRotation(rt *runtime) {
	switch rt.rot.Phase {
	case wg.PhasePrepared:
		// The record just published announces the next key again; peers
		// ack the new sequence number.
		a.beginWaiting(rt)
	case wg.PhaseSwitching:
		// The device got the next key at the first reconcile.
		st, err := rt.keys.MarkSwitched(rt.rot)
		if err != nil {
			a.log.Error("rotation: cannot persist the switch", "err", err)
			return
		}
		rt.rot = st
		a.commitRotation(rt)
	case wg.PhaseSwitched:
		a.commitRotation(rt)
	}
}

// startRotation begins a rotation of this site's key.
func (a *Agent) startRotation(rt *runtime, emergency bool) error {
	if rt.gossip == nil {
		return errGossipOff
	}
	if len(rt.cfg.Peers) > 0 {
		return fmt.Errorf("this site has %d static peers (plain WireGuard routers) that cannot learn a new key: rotation is off; move them to gossip or rotate by hand", len(rt.cfg.Peers))
	}
	if rt.rot.Phase != wg.PhaseStable {
		return fmt.Errorf("a rotation is already under way (phase %s)", rt.rot.Phase)
	}
	next, st, err := rt.keys.Prepare(rt.rot, time.Now(), emergency)
	if err != nil {
		return fmt.Errorf("prepare the new key: %w", err)
	}
	rt.rot, rt.next = st, next
	a.log.Info("key rotation started", "epoch", st.Epoch+1, "new_key", next.Public().Short(), "emergency", emergency)
	if emergency {
		// No waiting: the old key may be in someone else's hands.
		a.switchKey(rt)
		return nil
	}
	if err := a.publish(rt, false); err != nil {
		return err
	}
	a.failpoint("rotation-prepared")
	a.beginWaiting(rt)
	return nil
}

// beginWaiting starts collecting pre-install acks from every live site.
func (a *Agent) beginWaiting(rt *runtime) {
	sites, _ := rt.store.active(a.policy(rt), rt.cfg.Trust.RecordExpiry)
	run := newRotationRun(rt, rt.next.Public(), time.Now().Add(rt.cfg.Rotation.AckTimeout))
	if rt.run != nil {
		run.waiters = rt.run.waiters
	}
	for _, s := range sites {
		run.expected = append(run.expected, s.Name)
	}
	rt.run = run
	a.maybeSwitch(rt)
}

// maybeSwitch switches once every expected site pre-installed the key.
func (a *Agent) maybeSwitch(rt *runtime) {
	if rt.run == nil || rt.rot.Phase != wg.PhasePrepared {
		return
	}
	for _, s := range rt.run.expected {
		if !rt.run.pre[s] {
			return
		}
	}
	a.switchKey(rt)
}

// switchKey moves the device to the next key and ends the rotation on disk.
func (a *Agent) switchKey(rt *runtime) {
	st, err := rt.keys.BeginSwitch(rt.rot)
	if err != nil {
		// Still prepared on disk and in memory: the deadline retries.
		a.log.Error("rotation: cannot persist the switch; staying on the current key and retrying", "err", err)
		if rt.run != nil {
			rt.run.deadline = time.Now().Add(time.Second)
		}
		return
	}
	rt.rot = st
	a.failpoint("rotation-switching")
	a.notifySwitching(rt)
	next := rt.next
	psks := a.switchPSKs(rt)
	if psks != nil {
		// Persisted before they take effect, like the key itself.
		rt.psks = psks
		a.savePSKs(rt)
	}
	rt.kem = nil
	if rt.run == nil {
		rt.run = a.newRunForSwitch(rt, next.Public()) // emergency: no prepare phase
	}
	rt.run.switched = time.Now()
	if err := wg.SwitchKey(rt.wgc, rt.cfg.Interface, next, psks); err != nil {
		// Persisted as switching: the next reconcile (or a restart) gives
		// the device the next key; continue as if it had.
		a.log.Error("rotation: device switch failed; the next reconcile retries", "err", err)
	}
	rt.key, rt.next = next, wg.PrivateKey{}
	if st, err = rt.keys.MarkSwitched(rt.rot); err != nil {
		// Switching on disk: a restart finishes it; so does the next try.
		a.log.Error("rotation: cannot persist the switch", "err", err)
		return
	}
	rt.rot = st
	a.failpoint("rotation-switched")
	var pending []string
	for _, s := range rt.run.expected {
		if !rt.run.pre[s] && !rt.rot.Emergency {
			pending = append(pending, s)
		}
	}
	if len(pending) > 0 {
		a.log.Warn("rotation: switching without every peer's pre-install; they cut over from the new record", "missing", pending)
	}
	a.commitRotation(rt)
}

// commitRotation replaces the old key on disk, announces the new one and
// waits for peers to cut over.
func (a *Agent) commitRotation(rt *runtime) {
	result := "switched"
	if rt.rot.Emergency {
		result = "emergency switch"
	}
	started := rt.rot.Started
	st, err := rt.keys.Commit(rt.rot, time.Now(), result)
	if err != nil {
		a.log.Error("rotation: cannot replace the old key on disk; a restart finishes it", "err", err)
		return
	}
	rt.rot = st
	if err := a.publish(rt, false); err != nil {
		a.log.Error("rotation: cannot announce the new key", "err", err)
	}
	a.log.Info("key rotation switched", "epoch", rt.rot.Epoch, "key", rt.key.Public().Short())
	if rt.run == nil {
		// Resumed after a restart: the device got the key at the first
		// reconcile; any handshake since the rotation began is under it.
		rt.run = a.newRunForSwitch(rt, rt.key.Public())
		rt.run.switched = started
	}
	rt.run.key, rt.run.committed = rt.key.Public(), true
	rt.run.deadline = time.Now().Add(rt.cfg.Rotation.CompleteTimeout)
	a.maybeComplete(rt)
	a.scheduleRotation(rt)
}

// newRunForSwitch is the run of a rotation that switches without having
// waited for pre-installs: every live site is expected to cut over.
func (a *Agent) newRunForSwitch(rt *runtime, key wg.PublicKey) *rotationRun {
	sites, _ := rt.store.active(a.policy(rt), rt.cfg.Trust.RecordExpiry)
	run := newRotationRun(rt, key, time.Now().Add(rt.cfg.Rotation.CompleteTimeout))
	for _, s := range sites {
		run.expected = append(run.expected, s.Name)
	}
	return run
}

// maybeComplete ends the rotation once every expected site carried data
// both ways under the new key (confirm.go), or at the deadline.
func (a *Agent) maybeComplete(rt *runtime) {
	run := rt.run
	if run == nil || rt.rot.Phase != wg.PhaseStable {
		return
	}
	missing := run.missing()
	if len(missing) > 0 && time.Now().Before(run.deadline) {
		return
	}
	reply := control.RotateReply{Epoch: rt.rot.Epoch, PublicKey: rt.key.Public().String(), Result: control.RotateComplete, CutOver: run.cutOver(), Missing: missing}
	if len(missing) > 0 {
		reply.Result = control.RotateIncomplete
		dev, _ := rt.wgc.Device(rt.cfg.Interface)
		reply.Pending = map[string]string{}
		for _, s := range missing {
			reply.Pending[s] = a.whyUnconfirmed(rt, dev, s)
		}
		rt.rot.LastResult = fmt.Sprintf("incomplete: %v did not carry data both ways under the new key within %s", missing, rt.cfg.Rotation.CompleteTimeout)
		a.log.Warn("key rotation incomplete", "epoch", rt.rot.Epoch, "missing", missing, "why", reply.Pending)
	} else {
		rt.rot.LastResult = "complete"
		a.log.Info("key rotation complete: every peer carried data both ways under the new key", "epoch", rt.rot.Epoch, "sites", len(run.expected))
	}
	if a.metrics != nil {
		a.metrics.rotations.WithLabelValues(string(reply.Result)).Inc()
	}
	if err := rt.keys.SaveResult(rt.rot); err != nil {
		a.log.Warn("cannot record the rotation result", "err", err)
	}
	for _, w := range run.waiters {
		w <- reply
	}
	rt.run = nil
}

func (r *rotationRun) missing() []string {
	var out []string
	for _, s := range r.expected {
		if !r.ok[s] {
			out = append(out, s)
		}
	}
	return out
}

func (r *rotationRun) cutOver() []string {
	var out []string
	for _, s := range r.expected {
		if r.ok[s] {
			out = append(out, s)
		}
	}
	return out
}

// rotationDeadline handles the end of an ack or cut-over wait.
func (a *Agent) rotationDeadline(rt *runtime) {
	if rt.run == nil || time.Now().Before(rt.run.deadline) {
		return
	}
	if rt.rot.Phase == wg.PhasePrepared {
		a.switchKey(rt)
		return
	}
	a.maybeComplete(rt)
}

// scheduleRotation sets the next scheduled rotation: the current key's age
// plus the interval, ±10%.
func (a *Agent) scheduleRotation(rt *runtime) {
	iv := rt.cfg.Rotation.Interval
	if iv == 0 || rt.gossip == nil || len(rt.cfg.Peers) > 0 {
		rt.nextRotation = time.Time{}
		return
	}
	rt.nextRotation = nextRotationTime(rt.rot.KeySince, iv, time.Now(), rand.Float64)
}

// nextRotationTime is keySince + interval ± 10%; an overdue rotation happens
// within the next minute, at a random moment so that a cluster restarted
// together does not rotate all at once. random returns values in [0, 1).
func nextRotationTime(keySince time.Time, interval time.Duration, now time.Time, random func() float64) time.Time {
	jitter := time.Duration((random()*2 - 1) * rotationJitter * float64(interval))
	at := keySince.Add(interval + jitter)
	if soonest := now.Add(time.Duration(random() * float64(time.Minute))); at.Before(soonest) {
		at = soonest
	}
	return at
}

// rotationTimerDue returns when the rotation timer must fire next.
func (rt *runtime) rotationTimerDue() time.Time {
	due := rt.nextRotation
	earlier := func(t time.Time) {
		if !t.IsZero() && (due.IsZero() || t.Before(due)) {
			due = t
		}
	}
	if rt.run != nil {
		earlier(rt.run.deadline)
	}
	earlier(rt.confirmDue())
	return due
}

// onRotationTimer runs scheduled rotations, deadlines and confirmations.
func (a *Agent) onRotationTimer(rt *runtime) {
	a.pollConfirmations(rt)
	now := time.Now()
	if rt.run != nil && !now.Before(rt.run.deadline) {
		a.rotationDeadline(rt)
	}
	if !rt.nextRotation.IsZero() && !now.Before(rt.nextRotation) && rt.rot.Phase == wg.PhaseStable {
		rt.nextRotation = time.Time{}
		if err := a.startRotation(rt, false); err != nil {
			a.log.Error("scheduled key rotation did not start", "err", err)
			if a.metrics != nil {
				a.metrics.rotations.WithLabelValues(string(control.RotateFailed)).Inc()
			}
			a.scheduleRotation(rt)
		}
	}
}

// failpoint stops the agent dead at a named point when DCMESH_FAILPOINT
// names it. Tests use it to kill -9 an agent in the middle of a rotation;
// it does nothing otherwise.
func (a *Agent) failpoint(name string) {
	if os.Getenv("DCMESH_FAILPOINT") != name {
		return
	}
	a.log.Warn("failpoint reached; waiting to be killed", "failpoint", name)
	select {}
}
