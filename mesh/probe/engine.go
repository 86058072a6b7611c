package probe

import (
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// engine holds every session and runs the protocol. It does no I/O and
// reads no clock: callers pass the time and collect the packets to send
// (takeOut), so tests drive it with a simulated clock and network. The
// Prober calls it under a mutex.
type engine struct {
	cfg   Config
	log   *slog.Logger
	rng   *rand.Rand
	epoch time.Time // start of loss bucket 1

	list     []*session // sorted by name, then address: deterministic order
	byAddr   map[netip.Addr]*session
	byDiscr  map[uint32]*session
	retiring []*session

	out     []outPacket
	changed bool // a reported state changed, or a target came or went
	drops   Drops

	// roundAt is the instant of the last transmission round, roundJitter
	// the fraction of a quarter interval its sessions' next transmission
	// comes early (see transmit).
	roundAt     time.Time
	roundJitter float64

	// rxSeen is when the Prober last read everything queued for it
	// (zero: always now). Packets that arrived since may still wait in
	// the bulk socket, so the open gap of a session's loss ends there.
	rxSeen time.Time
}

// outPacket is one packet to send.
type outPacket struct {
	dst netip.Addr
	b   [PacketLen]byte
}

// Drops counts received packets dropped before reaching a session.
type Drops struct {
	Invalid uint64 // failed ParsePacket (RFC 5880 §6.8.6)
	TTL     uint64 // IP TTL / hop limit not 255 (CheckTTL)
	Unknown uint64 // no session for the discriminator or the source
	Source  uint64 // discriminator of a session with another remote address
}

func newEngine(cfg Config, rng *rand.Rand, now time.Time) *engine {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &engine{
		cfg: cfg, log: log, rng: rng, epoch: now,
		byAddr: map[netip.Addr]*session{}, byDiscr: map[uint32]*session{},
	}
}

// setTargets makes the sessions match ts (validated by the caller). New
// targets start Down; removed ones leave the maps at once and send
// Multiplier AdminDown packets so the remote goes down without waiting for
// its detection time (RFC 5880 §6.8.16).
func (e *engine) setTargets(ts []Target, now time.Time) {
	want := make(map[netip.Addr]string, len(ts))
	for _, t := range ts {
		want[t.Addr] = t.Name
	}
	kept := e.list[:0]
	for _, s := range e.list {
		if _, ok := want[s.remote]; ok {
			kept = append(kept, s)
			continue
		}
		delete(e.byAddr, s.remote)
		delete(e.byDiscr, s.localDiscr)
		s.state, s.localDiag, s.retireLeft = StateAdminDown, DiagAdminDown, int(e.cfg.Multiplier)
		s.poll = pollState{}
		s.desiredMinTx = max(e.cfg.Interval, slowTxInterval)
		e.sendSoon(s, now)
		e.retiring = append(e.retiring, s)
		e.changed = true
		e.log.Info("probe session removed", "peer", s.name, "addr", s.remote)
	}
	clear(e.list[len(kept):])
	e.list = kept
	for _, t := range ts {
		if s := e.byAddr[t.Addr]; s != nil {
			s.name = t.Name
			continue
		}
		e.retiring = slices.DeleteFunc(e.retiring, func(r *session) bool { return r.remote == t.Addr })
		s := e.newSession(t, now)
		e.list = append(e.list, s)
		e.byAddr[s.remote] = s
		e.byDiscr[s.localDiscr] = s
		e.changed = true
	}
	slices.SortFunc(e.list, func(a, b *session) int {
		if c := strings.Compare(a.name, b.name); c != 0 {
			return c
		}
		return a.remote.Compare(b.remote)
	})
}

func (e *engine) newSession(t Target, now time.Time) *session {
	d := e.rng.Uint32()
	for d == 0 || e.byDiscr[d] != nil {
		d = e.rng.Uint32()
	}
	return &session{
		name: t.Name, remote: t.Addr,
		state: StateDown, remoteState: StateDown, reported: StateDown, since: now,
		localDiscr: d, desiredMinTx: max(e.cfg.Interval, slowTxInterval),
		remoteMinRx: initialRemoteMinRx, nextTx: now,
	}
}

// receive handles one datagram from src; ttl is the IP TTL or hop limit,
// or -1 if the socket could not tell.
func (e *engine) receive(b []byte, src netip.Addr, ttl int, now time.Time) {
	p, err := ParsePacket(b)
	if err != nil {
		e.drops.Invalid++
		e.log.Debug("probe packet dropped", "from", src, "err", err)
		return
	}
	if e.cfg.CheckTTL && ttl >= 0 && ttl != 255 {
		e.drops.TTL++
		e.log.Debug("probe packet dropped: TTL is not 255", "from", src, "ttl", ttl)
		return
	}
	// Demultiplex (RFC 5880 §6.8.6): by Your Discriminator when set,
	// else by source address (ParsePacket allowed that only in Down and
	// AdminDown). A discriminator must also come from its session's
	// address: another gateway cannot speak for this one.
	var s *session
	if p.YourDiscr != 0 {
		s = e.byDiscr[p.YourDiscr]
		if s != nil && s.remote != src {
			e.drops.Source++
			return
		}
	} else {
		s = e.byAddr[src]
	}
	if s == nil {
		e.drops.Unknown++
		return
	}
	e.handle(s, p, now)
}

// handle is the reception procedure of RFC 5880 §6.8.6 for a packet that
// selected session s.
func (e *engine) handle(s *session, p Packet, now time.Time) {
	s.rxPackets++
	if now.Before(s.lastRx) {
		e.handleStale(s, p, now)
		return
	}
	s.lastRx = now
	e.countLoss(s, p, now)
	s.remoteDiscr = p.MyDiscr
	s.remoteState = p.State
	s.remoteDemand = p.Demand
	s.remoteMinRx = time.Duration(p.RequiredMinRxUS) * time.Microsecond
	s.remoteDesiredTx = time.Duration(p.DesiredMinTxUS) * time.Microsecond
	s.remoteMult = p.DetectMult
	s.remoteDiag = p.Diag
	if p.Final && s.poll.active {
		e.endPoll(s, now)
	}
	s.detectAt = now.Add(s.detectTime(e.cfg.Interval))
	s.stallGraced = false
	if s.state == StateAdminDown {
		return
	}
	switch {
	case p.State == StateAdminDown:
		if s.state != StateDown {
			e.setState(s, StateDown, DiagNeighborDown, now)
		}
	case s.state == StateDown:
		switch p.State {
		case StateDown:
			e.setState(s, StateInit, DiagNone, now)
		case StateInit:
			e.setState(s, StateUp, DiagNone, now)
		}
	case s.state == StateInit:
		if p.State == StateInit || p.State == StateUp {
			e.setState(s, StateUp, DiagNone, now)
		}
	default: // Up
		if p.State == StateDown {
			e.setState(s, StateDown, DiagNeighborDown, now)
		}
	}
	if p.Poll {
		// Answer at once, whatever the transmit timer (RFC 5880 §6.8.7).
		e.emit(s, false, true)
	}
}

// handleStale takes a packet that arrived before one already handled: the
// Prober reads two sockets (see socket), and sorts what it reads together,
// but the reader goroutine and the timer loop may each hold part of a
// burst. Such a packet says nothing about the session now, so it moves no
// timer and no state; a Poll still gets its Final (the remote waits for
// it) and a Final still ends this side's Poll Sequence.
func (e *engine) handleStale(s *session, p Packet, now time.Time) {
	s.loss.add(e.bucket(now), 1, 0)
	if p.Final && s.poll.active {
		e.endPoll(s, now)
	}
	if p.Poll && s.state != StateAdminDown {
		e.emit(s, false, true)
	}
}

// setState moves the session to st. Leaving Up slows transmission to
// slowTxInterval; reaching Up speeds it to Interval, which starts a Poll
// Sequence (RFC 5880 §6.8.3; the decrease takes effect at once).
func (e *engine) setState(s *session, st State, diag Diag, now time.Time) {
	old := s.state
	s.state, s.localDiag = st, diag
	if st == StateUp {
		if s.desiredMinTx != e.cfg.Interval {
			s.desiredMinTx = e.cfg.Interval
			e.startPoll(s, now)
		}
	} else {
		s.desiredMinTx = max(e.cfg.Interval, slowTxInterval)
		s.poll = pollState{}
		s.prevRx = time.Time{}
	}
	if old == StateUp {
		s.downDiag = diag
	}
	e.sendSoon(s, now)
	e.log.Debug("probe session state", "peer", s.name, "addr", s.remote, "from", old, "to", st, "diag", diag)
	e.updateReported(s, now)
}

// updateReported applies the anti-flap hold: the reported state follows the
// session state, except that Up is reported only once the session has been
// Up for Hold - unless it was never reported Up before (a fresh session
// joins at once). During the hold the reported state keeps its last value.
func (e *engine) updateReported(s *session, now time.Time) {
	want := s.state
	if want == StateUp && s.reported != StateUp {
		if s.holdUntil.IsZero() {
			s.holdUntil = now
			if s.wasUp {
				s.holdUntil = now.Add(e.cfg.Hold)
			}
		}
		if now.Before(s.holdUntil) {
			return
		}
	}
	if want != StateUp {
		s.holdUntil = time.Time{}
	}
	if want == s.reported {
		return
	}
	old := s.reported
	s.reported, s.since, s.holdUntil = want, now, time.Time{}
	e.changed = true
	switch {
	case want == StateUp:
		s.wasUp = true
		e.log.Info("probe peer up", "peer", s.name, "addr", s.remote)
	case old == StateUp:
		s.downs++
		e.log.Info("probe peer down", "peer", s.name, "addr", s.remote, "diag", s.localDiag, "remote_diag", s.remoteDiag)
	}
}

// expire runs when the detection time passed without a packet (RFC 5880
// §6.8.4, §6.8.1 bfd.RemoteDiscr).
func (e *engine) expire(s *session, now time.Time) {
	s.detectAt = time.Time{}
	if s.state == StateUp && !s.prevRx.IsZero() {
		m := int(s.remoteMult)
		s.missed += uint64(m)
		s.loss.add(e.bucket(now), 0, m)
	}
	if s.state == StateInit || s.state == StateUp {
		e.setState(s, StateDown, DiagDetectExpired, now)
	}
	s.remoteDiscr, s.remoteState = 0, StateDown
	// Not in the RFC: forget the remote's RX floor too, so a vanished
	// peer's last word cannot throttle this side's Down packets.
	s.remoteMinRx = initialRemoteMinRx
}

// countLoss accounts a received packet in the loss window. Only periodic
// packets (not Final answers) received while Up count; see missedIn.
func (e *engine) countLoss(s *session, p Packet, now time.Time) {
	if s.state != StateUp || p.Final {
		return
	}
	t := max(time.Duration(p.DesiredMinTxUS)*time.Microsecond, e.cfg.Interval)
	m := 0
	if !s.prevRx.IsZero() {
		m = missedIn(now.Sub(s.prevRx), max(t, s.prevRemote))
		s.missed += uint64(m)
	}
	s.loss.add(e.bucket(now), 1, m)
	s.prevRx, s.prevRemote = now, t
}

// bucket numbers loss buckets from 1 at the engine's epoch; a time before
// it (a clock oddity) goes into bucket 1 rather than a negative slot.
func (e *engine) bucket(now time.Time) int64 {
	return max(1, int64(now.Sub(e.epoch)/(e.cfg.LossWindow/lossBuckets))+1)
}

func (e *engine) startPoll(s *session, now time.Time) {
	s.poll = pollState{active: true}
	if e.cfg.RTTInterval > 0 {
		s.nextRTTPoll = now.Add(e.cfg.RTTInterval)
	}
}

// endPoll ends a Poll Sequence. Its round trip is an RTT sample only if
// exactly one P left: with more, the F may answer any of them (Karn). A
// Final stamped before the P left answers something else and is no sample
// either.
func (e *engine) endPoll(s *session, now time.Time) {
	if s.poll.sent == 1 && !now.Before(s.poll.lastSent) {
		s.rtt = now.Sub(s.poll.lastSent)
		if s.srtt == 0 {
			s.srtt = s.rtt
		} else {
			s.srtt += (s.rtt - s.srtt) / 8 // RFC 6298's alpha
		}
	}
	s.poll = pollState{}
}

// advance runs every timer due at now and returns the next deadline.
func (e *engine) advance(now time.Time) time.Time {
	var next time.Time
	soonest := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for _, s := range e.list {
		if !s.detectAt.IsZero() && !now.Before(s.detectAt) {
			e.expire(s, now)
		}
		if !s.holdUntil.IsZero() && !now.Before(s.holdUntil) {
			e.updateReported(s, now)
		}
		if txDue(s, now) {
			e.transmit(s, now)
		}
		soonest(s.detectAt)
		soonest(s.holdUntil)
		soonest(s.nextTx)
	}
	e.retiring = slices.DeleteFunc(e.retiring, func(s *session) bool {
		if txDue(s, now) {
			e.transmit(s, now)
			s.retireLeft--
		}
		soonest(s.nextTx)
		return s.retireLeft <= 0
	})
	return next
}

// graceStall is for a detection deadline that passed while this process
// was stalled (the timer loop woke far too late: starved of CPU, or the
// whole host paused). The silence it measured is partly our own: the
// WireGuard device, in the same process for the embedded backend, had not
// delivered the peer's packets either, and the peer's next periodic packet
// is due within one interval of our waking. So each expired session that
// has not already been graced since its last packet gets until now +
// grace; one that stays silent is declared down then. A dead peer is thus
// detected at most grace (one interval) plus the stall later, and only once
// per silence: a host that keeps stalling cannot hide a dead peer.
// It returns how many sessions it graced.
func (e *engine) graceStall(now time.Time, grace time.Duration) int {
	n := 0
	for _, s := range e.list {
		if s.detectAt.IsZero() || now.Before(s.detectAt) || s.stallGraced {
			continue
		}
		s.detectAt, s.stallGraced = now.Add(grace), true
		n++
	}
	return n
}

// anyInit reports whether a session is in Init: it goes Up on the
// remote's next Up packet, which the Prober's bulk socket holds until the
// timer loop drains it, so the loop wakes at least every tenth of an
// interval until no session waits.
func (e *engine) anyInit() bool {
	for _, s := range e.list {
		if s.state == StateInit {
			return true
		}
	}
	return false
}

// expiring reports whether a detection deadline has passed at now.
func (e *engine) expiring(now time.Time) bool {
	for _, s := range e.list {
		if !s.detectAt.IsZero() && !now.Before(s.detectAt) {
			return true
		}
	}
	return false
}

// nextDeadline is advance's answer without running anything.
func (e *engine) nextDeadline() time.Time {
	var next time.Time
	soonest := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for _, s := range e.list {
		soonest(s.detectAt)
		soonest(s.holdUntil)
		soonest(s.nextTx)
	}
	for _, s := range e.retiring {
		soonest(s.nextTx)
	}
	return next
}

// shutdown queues one AdminDown packet per session (RFC 5880 §6.8.16), so
// peers go down at once rather than after their detection time, and
// reports every session admin_down.
func (e *engine) shutdown(now time.Time) {
	for _, s := range e.list {
		s.state, s.localDiag, s.detectAt = StateAdminDown, DiagAdminDown, time.Time{}
		e.emit(s, false, false)
		e.updateReported(s, now)
	}
	e.retiring = nil
}

// takeOut returns the queued packets and whether a reported state changed
// since the last call.
func (e *engine) takeOut(buf []outPacket) ([]outPacket, bool) {
	buf = append(buf[:0], e.out...)
	e.out = e.out[:0]
	changed := e.changed
	e.changed = false
	return buf, changed
}
