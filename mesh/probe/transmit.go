package probe

import "time"

// earliestTx is the earliest a periodic packet may leave: three quarters
// of the interval after the last one (RFC 5880 §6.8.7's jitter floor). The
// smaller of the old and the current interval counts, so that a session
// that just sped up (reached Up) may use the new one at once.
func (s *session) earliestTx() time.Time {
	return s.lastTx.Add(min(s.curTx, s.txInterval()) * 3 / 4)
}

// sendSoon moves the next periodic transmission as early as allowed, so a
// state change reaches the remote without waiting a whole slow interval.
func (e *engine) sendSoon(s *session, now time.Time) {
	at := s.earliestTx()
	if at.Before(now) {
		at = now
	}
	if at.Before(s.nextTx) {
		s.nextTx = at
	}
}

// txDue reports whether the periodic packet of s should leave at now. A
// packet due within a tenth of its interval leaves with whatever woke the
// timer, never before earliestTx: one wakeup then serves several sessions,
// which is most of the CPU a Prober with many peers spends, and every
// interval still falls within RFC 5880's 75-100 %.
func txDue(s *session, now time.Time) bool {
	return !now.Before(s.nextTx.Add(-s.txInterval()/10)) && !now.Before(s.earliestTx())
}

// emit queues one packet for s: Final answers a Poll and never carries P.
func (e *engine) emit(s *session, poll, final bool) {
	p := Packet{
		Diag: s.localDiag, State: s.state, Poll: poll && !final, Final: final,
		DetectMult: e.cfg.Multiplier, MyDiscr: s.localDiscr, YourDiscr: s.remoteDiscr,
		DesiredMinTxUS:  uint32(s.desiredMinTx / time.Microsecond),
		RequiredMinRxUS: uint32(e.cfg.Interval / time.Microsecond),
	}
	o := outPacket{dst: s.remote}
	p.Append(o.b[:0])
	e.out = append(e.out, o)
	s.txPackets++
}

// transmit sends the periodic packet of s that is due and schedules the
// next one, jittered to 75-100 % of the interval (RFC 5880 §6.8.7).
//
// The jitter is drawn once per round, not per session: every session that
// transmits at the same instant gets the same next one, so sessions that
// once shared a wakeup share all the following ones, and txDue's tenth of
// an interval pulls any other session whose turn comes close into the
// round for good. A Prober with many peers thus converges to one wakeup
// per interval instead of one per peer and interval. A wakeup costs far
// more than a packet: on this project's 2-vCPU test machine an empty Go
// timer wakeup costs about 0.18 ms of CPU, so 31 sessions waking on their
// own (~180 wakeups a second) would cost over 3 % of a core in wakeups
// alone. Each session's intervals are still random within 75-100 %, which
// is what the RFC's jitter is for: no lockstep with the remote systems.
func (e *engine) transmit(s *session, now time.Time) {
	s.curTx = s.txInterval()
	if !now.Equal(e.roundAt) {
		e.roundAt, e.roundJitter = now, e.rng.Float64()
	}
	s.nextTx = now.Add(s.curTx - time.Duration(e.roundJitter*float64(s.curTx/4)))
	if s.remoteMinRx == 0 || s.demandActive() {
		return // the remote asked for no periodic packets
	}
	if s.state == StateUp && !s.poll.active && e.cfg.RTTInterval > 0 && !now.Before(s.nextRTTPoll) {
		e.startPoll(s, now)
	}
	e.emit(s, s.poll.active, false)
	if s.poll.active {
		s.poll.sent++
		s.poll.lastSent = now
	}
	s.lastTx = now
}
