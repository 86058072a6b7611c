package rotation

import (
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
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
//     after A's "switching now" notice), or SwitchGrace after A's new record
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

func newRotationRun(key wg.PublicKey, deadline time.Time) *rotationRun {
	run := &rotationRun{key: key, pre: map[string]bool{}, cut: map[string]bool{}, psk: map[string]wg.PresharedKey{},
		deadline: deadline, ok: map[string]bool{}, rxBase: map[string]int64{}, asked: map[string]time.Time{}}
	return run
}

// switchedOver reports whether the run waits for confirmations.
func (run *rotationRun) switchedOver() bool { return run.committed && len(run.missing()) > 0 }

// resumeRotation finishes what a restart interrupted, once the device and
// gossip are up.
func (r *Rotator) resumeRotation() {
	switch r.state.Phase {
	case wg.PhasePrepared:
		// The record just published announces the next key again; peers
		// ack the new sequence number.
		r.beginWaiting()
	case wg.PhaseSwitching:
		// The device got the next key at the first reconcile.
		st, err := r.keys.MarkSwitched(r.state)
		if err != nil {
			r.log.Error("rotation: cannot persist the switch", "err", err)
			return
		}
		r.state = st
		r.commitRotation()
	case wg.PhaseSwitched:
		r.commitRotation()
	}
}

// startRotation begins a rotation of this site's key.
func (r *Rotator) startRotation(emergency bool) error {
	if !r.online {
		return config.ErrNoGossip
	}
	if len(r.cfg.Peers) > 0 {
		return fmt.Errorf("this site has %d static peers (plain WireGuard routers) that cannot learn a new key: rotation is off; move them to gossip or rotate by hand", len(r.cfg.Peers))
	}
	if r.state.Phase != wg.PhaseStable {
		return fmt.Errorf("a rotation is already under way (phase %s)", r.state.Phase)
	}
	next, st, err := r.keys.Prepare(r.state, time.Now(), emergency)
	if err != nil {
		return fmt.Errorf("prepare the new key: %w", err)
	}
	r.state, r.next = st, next
	r.log.Info("key rotation started", "epoch", st.Epoch+1, "new_key", next.Public().Short(), "emergency", emergency)
	if emergency {
		// No waiting: the old key may be in someone else's hands.
		r.switchKey()
		return nil
	}
	if err := r.env.Publish(); err != nil {
		return err
	}
	r.failpoint("rotation-prepared")
	r.beginWaiting()
	return nil
}

// Request starts a rotation for the control API; wait gets the reply when
// it ends, unless it ended already (the reply says complete).
func (r *Rotator) Request(emergency bool, wait chan control.RotateReply) (control.RotateReply, error) {
	if err := r.startRotation(emergency); err != nil {
		return control.RotateReply{}, err
	}
	if r.run == nil {
		// Done already: no live peer to wait for (the first site of a
		// cluster).
		return control.RotateReply{Epoch: r.state.Epoch, PublicKey: r.key.Public().String(), Result: control.RotateComplete}, nil
	}
	r.run.waiters = append(r.run.waiters, wait)
	epoch := r.state.Epoch
	if r.Rotating() {
		epoch++ // not committed yet
	}
	return control.RotateReply{Epoch: epoch, PublicKey: r.run.key.String(), Result: control.RotateStarted}, nil
}

// beginWaiting starts collecting pre-install acks from every live site.
func (r *Rotator) beginWaiting() {
	sites := r.env.LiveSites()
	run := newRotationRun(r.next.Public(), time.Now().Add(r.cfg.Rotation.AckTimeout))
	if r.run != nil {
		run.waiters = r.run.waiters
	}
	for _, s := range sites {
		run.expected = append(run.expected, s.Node())
	}
	r.run = run
	r.maybeSwitch()
}

// maybeSwitch switches once every expected site pre-installed the key.
func (r *Rotator) maybeSwitch() {
	if r.run == nil || r.state.Phase != wg.PhasePrepared {
		return
	}
	for _, s := range r.run.expected {
		if !r.run.pre[s] {
			return
		}
	}
	r.switchKey()
}

// switchKey moves the device to the next key and ends the rotation on disk.
func (r *Rotator) switchKey() {
	st, err := r.keys.BeginSwitch(r.state)
	if err != nil {
		// Still prepared on disk and in memory: the deadline retries.
		r.log.Error("rotation: cannot persist the switch; staying on the current key and retrying", "err", err)
		if r.run != nil {
			r.run.deadline = time.Now().Add(time.Second)
		}
		return
	}
	r.state = st
	r.failpoint("rotation-switching")
	r.notifySwitching()
	next := r.next
	psks := r.switchPSKs()
	if psks != nil {
		// Persisted before they take effect, like the key itself.
		r.psks = psks
		r.savePSKs()
	}
	r.kem = nil
	if r.run == nil {
		r.run = r.newRunForSwitch(next.Public()) // emergency: no prepare phase
	}
	r.run.switched = time.Now()
	if err := r.switchKeyEverywhere(next, psks); err != nil {
		// Persisted as switching: the next reconcile (or a restart) gives
		// the device the next key; continue as if it had.
		r.log.Error("rotation: device switch failed; the next reconcile retries", "err", err)
	}
	r.key, r.next = next, wg.PrivateKey{}
	if st, err = r.keys.MarkSwitched(r.state); err != nil {
		// Switching on disk: a restart finishes it; so does the next try.
		r.log.Error("rotation: cannot persist the switch", "err", err)
		return
	}
	r.state = st
	r.failpoint("rotation-switched")
	var pending []string
	for _, s := range r.run.expected {
		if !r.run.pre[s] && !r.state.Emergency {
			pending = append(pending, s)
		}
	}
	if len(pending) > 0 {
		r.log.Warn("rotation: switching without every peer's pre-install; they cut over from the new record", "missing", pending)
	}
	r.commitRotation()
}

// commitRotation replaces the old key on disk, announces the new one and
// waits for peers to cut over.
func (r *Rotator) commitRotation() {
	result := "switched"
	if r.state.Emergency {
		result = "emergency switch"
	}
	started := r.state.Started
	st, err := r.keys.Commit(r.state, time.Now(), result)
	if err != nil {
		r.log.Error("rotation: cannot replace the old key on disk; a restart finishes it", "err", err)
		return
	}
	r.state = st
	if err := r.env.Publish(); err != nil {
		r.log.Error("rotation: cannot announce the new key", "err", err)
	}
	r.log.Info("key rotation switched", "epoch", r.state.Epoch, "key", r.key.Public().Short())
	if r.run == nil {
		// Resumed after a restart: the device got the key at the first
		// reconcile; any handshake since the rotation began is under it.
		r.run = r.newRunForSwitch(r.key.Public())
		r.run.switched = started
	}
	r.run.key, r.run.committed = r.key.Public(), true
	r.run.deadline = time.Now().Add(r.cfg.Rotation.CompleteTimeout)
	r.maybeComplete()
	r.scheduleRotation()
}

// newRunForSwitch is the run of a rotation that switches without having
// waited for pre-installs: every live site is expected to cut over.
func (r *Rotator) newRunForSwitch(key wg.PublicKey) *rotationRun {
	sites := r.env.LiveSites()
	run := newRotationRun(key, time.Now().Add(r.cfg.Rotation.CompleteTimeout))
	for _, s := range sites {
		run.expected = append(run.expected, s.Node())
	}
	return run
}

// maybeComplete ends the rotation once every expected site carried data
// both ways under the new key (confirm.go), or at the deadline.
func (r *Rotator) maybeComplete() {
	run := r.run
	if run == nil || r.state.Phase != wg.PhaseStable {
		return
	}
	missing := run.missing()
	if len(missing) > 0 && time.Now().Before(run.deadline) {
		return
	}
	reply := control.RotateReply{Epoch: r.state.Epoch, PublicKey: r.key.Public().String(), Result: control.RotateComplete, CutOver: run.cutOver(), Missing: missing}
	if len(missing) > 0 {
		reply.Result = control.RotateIncomplete
		dev, _ := r.readDevices()
		reply.Pending = map[string]string{}
		for _, s := range missing {
			reply.Pending[s] = r.whyUnconfirmed(dev, s)
		}
		r.state.LastResult = fmt.Sprintf("incomplete: %v did not carry data both ways under the new key within %s", missing, r.cfg.Rotation.CompleteTimeout)
		r.log.Warn("key rotation incomplete", "epoch", r.state.Epoch, "missing", missing, "why", reply.Pending)
	} else {
		r.state.LastResult = "complete"
		r.log.Info("key rotation complete: every peer carried data both ways under the new key", "epoch", r.state.Epoch, "sites", len(run.expected))
	}
	r.env.Counted(reply.Result)
	if err := r.keys.SaveResult(r.state); err != nil {
		r.log.Warn("cannot record the rotation result", "err", err)
	}
	for _, w := range run.waiters {
		w <- reply
	}
	r.run = nil
}

func (run *rotationRun) missing() []string {
	var out []string
	for _, s := range run.expected {
		if !run.ok[s] {
			out = append(out, s)
		}
	}
	return out
}

func (run *rotationRun) cutOver() []string {
	var out []string
	for _, s := range run.expected {
		if run.ok[s] {
			out = append(out, s)
		}
	}
	return out
}

// rotationDeadline handles the end of an ack or cut-over wait.
func (r *Rotator) rotationDeadline() {
	if r.run == nil || time.Now().Before(r.run.deadline) {
		return
	}
	if r.state.Phase == wg.PhasePrepared {
		r.switchKey()
		return
	}
	r.maybeComplete()
}

// scheduleRotation sets the next scheduled rotation: the current key's age
// plus the interval, ±10%.
func (r *Rotator) scheduleRotation() {
	iv := r.cfg.Rotation.Interval
	if iv == 0 || !r.online || len(r.cfg.Peers) > 0 {
		r.nextRotation = time.Time{}
		return
	}
	r.nextRotation = nextRotationTime(r.state.KeySince, iv, time.Now(), rand.Float64)
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

// TimerDue returns when the rotation timer must fire next.
func (r *Rotator) TimerDue() time.Time {
	due := r.nextRotation
	earlier := func(t time.Time) {
		if !t.IsZero() && (due.IsZero() || t.Before(due)) {
			due = t
		}
	}
	if r.run != nil {
		earlier(r.run.deadline)
	}
	earlier(r.confirmDue())
	return due
}

// OnTimer runs scheduled rotations, deadlines and confirmations.
func (r *Rotator) OnTimer() {
	r.pollConfirmations()
	now := time.Now()
	if r.run != nil && !now.Before(r.run.deadline) {
		r.rotationDeadline()
	}
	if !r.nextRotation.IsZero() && !now.Before(r.nextRotation) && r.state.Phase == wg.PhaseStable {
		r.nextRotation = time.Time{}
		if err := r.startRotation(false); err != nil {
			r.log.Error("scheduled key rotation did not start", "err", err)
			r.env.Counted(control.RotateFailed)
			r.scheduleRotation()
		}
	}
}

// failpoint stops the agent dead at a named point when DCMESH_FAILPOINT
// names it. Tests use it to kill -9 an agent in the middle of a rotation;
// it does nothing otherwise.
func (r *Rotator) failpoint(name string) {
	if os.Getenv("DCMESH_FAILPOINT") != name {
		return
	}
	r.log.Warn("failpoint reached; waiting to be killed", "failpoint", name)
	select {}
}
