package mesh

import (
	"net/netip"
	"slices"
	"time"
)

// Several uplinks: a site announces its endpoints in order of preference
// (config `endpoints`), and each peer picks which one to send to. The pick
// is uplinkChooser's, a pure state machine over the in-tunnel probe session
// of that site and a clock; the agent (uplinks_agent.go) feeds it and makes
// the one device call a switch takes. WireGuard needs no handshake for a
// new endpoint: the session survives, and the far side roams to our new
// source at the first authenticated packet.
//
//   - settled on endpoint i: the session is up, or has not been judged.
//     When it goes down, try the next endpoint (cycling through the list).
//   - trying endpoint i: switched after a failure, for uplinkTimers.Trial.
//     The session up on it settles there; the trial running out tries the
//     next one (and so on round the list, the preferred one included;
//     after a round in vain, trials grow: see failover).
//   - returning: settled on a fallback, up, for the hold: switch to the
//     preferred endpoint for uplinkTimers.ReturnTrial. If the session is
//     still up at the end and the device still sends to the preferred
//     endpoint, settle there; otherwise go back to the fallback and double
//     the hold (up to 16 times). The device check matters because of
//     WireGuard's roaming: while the preferred path is still broken, the
//     remote's packets keep arriving from the fallback and the device
//     follows them back within one probe interval, so the session never
//     goes down and only the device's endpoint tells the trial failed. A
//     return to a repaired path loses nothing (both paths work at the
//     switch); a failed trial loses at most until the remote's next packet.

// uplinkSession is the probe session of a site as the chooser sees it.
type uplinkSession int

const (
	// sessionUnknown: no probe session, or a new one still coming up.
	sessionUnknown uplinkSession = iota
	sessionUp
	sessionDown
)

// uplinkPhase is where a chooser is (see above).
type uplinkPhase int

const (
	uplinkSettled uplinkPhase = iota
	uplinkTrying
	uplinkReturning
)

func (p uplinkPhase) String() string {
	switch p {
	case uplinkTrying:
		return "trying"
	case uplinkReturning:
		return "returning"
	}
	return "settled"
}

// maxHoldFactor bounds the doubling of the hold after failed returns.
const maxHoldFactor = 16

// uplinkTimers are a chooser's durations.
type uplinkTimers struct {
	// Trial is how long a fallback endpoint gets for the session to come
	// up on it; ReturnTrial how long the preferred one gets on a return.
	Trial, ReturnTrial time.Duration
	// Hold is how long a fallback must carry the session before the
	// preferred endpoint is tried again.
	Hold time.Duration
}

// probeSlowInterval is the probes' transmit interval while a session is not
// up (RFC 5880 §6.8.3, mesh/probe): a session re-forming on a new path
// waits up to this for the next packet.
const probeSlowInterval = time.Second

// uplinkTimersFor derives the trials from the probe timers: a trial lasts
// two detection times plus one slow probe interval (the session must
// re-form: Down, Init, Up), a return trial two detection times (the session
// stays up; the remote must send on the new path at least once).
func uplinkTimersFor(interval time.Duration, multiplier uint8, hold time.Duration) uplinkTimers {
	detect := interval * time.Duration(multiplier)
	return uplinkTimers{Trial: 2*detect + probeSlowInterval, ReturnTrial: 2 * detect, Hold: hold}
}

// uplinkChooser picks the endpoint of one remote site. Not safe for
// concurrent use (the agent loop owns it).
type uplinkChooser struct {
	timers    uplinkTimers
	endpoints []netip.AddrPort
	cur       int
	phase     uplinkPhase
	deadline  time.Time // trying, returning: the trial ends
	prev      int       // returning: the fallback to go back to
	holdUntil time.Time // settled on a fallback: when to return
	hold      time.Duration
	failovers uint64 // switches away from an endpoint that stopped answering
	misses    int    // trials in a row that ran out (see failover)
}

func newUplinkChooser(t uplinkTimers, endpoints []netip.AddrPort) *uplinkChooser {
	return &uplinkChooser{timers: t, endpoints: slices.Clone(endpoints), hold: t.Hold}
}

// Current is the endpoint to send to (zero with none).
func (c *uplinkChooser) Current() netip.AddrPort {
	if len(c.endpoints) == 0 {
		return netip.AddrPort{}
	}
	return c.endpoints[c.cur]
}

// SetEndpoints takes a site's new list. The endpoint in use stays if the
// list still has it (settled there; a trial ends); otherwise the chooser
// starts over on the preferred one. It reports whether Current changed.
func (c *uplinkChooser) SetEndpoints(now time.Time, eps []netip.AddrPort) bool {
	if slices.Equal(eps, c.endpoints) {
		return false
	}
	was := c.Current()
	c.endpoints = slices.Clone(eps)
	i := slices.Index(eps, was)
	if i < 0 {
		c.cur, c.phase, c.hold, c.holdUntil, c.misses = 0, uplinkSettled, c.timers.Hold, time.Time{}, 0
		return c.Current() != was
	}
	// A trial's indexes name the old list: stay where the device sends
	// and let the session decide from here.
	c.cur, c.phase = i, uplinkSettled
	if i != 0 && c.holdUntil.IsZero() {
		c.holdUntil = now.Add(c.hold) // a new preferred endpoint: try it after the hold
	}
	return false
}

// Step advances the chooser to now with the site's session state; device
// is the endpoint the device sends to now (only read at the end of a
// return trial: see NeedsDevice). It reports whether Current changed: the
// caller then gives the device the new endpoint.
func (c *uplinkChooser) Step(now time.Time, s uplinkSession, device netip.AddrPort) bool {
	if len(c.endpoints) < 2 {
		return false
	}
	switch c.phase {
	case uplinkSettled:
		if s == sessionDown {
			c.failover(now)
			return true
		}
		if c.cur != 0 && s == sessionUp && !now.Before(c.holdUntil) {
			c.phase, c.prev, c.cur, c.deadline = uplinkReturning, c.cur, 0, now.Add(c.timers.ReturnTrial)
			return true
		}
	case uplinkTrying:
		if s == sessionUp {
			c.settle(now)
			return false
		}
		if !now.Before(c.deadline) {
			c.failover(now)
			return true
		}
	case uplinkReturning:
		if s == sessionDown {
			// Back to the fallback, which must prove itself again.
			c.cur = c.prev
			c.backOff()
			c.phase, c.deadline, c.misses = uplinkTrying, now.Add(c.timers.Trial), 0
			c.failovers++
			return true
		}
		if !now.Before(c.deadline) {
			if s == sessionUp && device == c.endpoints[0] {
				c.settle(now)
				return false
			}
			c.cur = c.prev
			c.backOff()
			c.settle(now)
			return true
		}
	}
	return false
}

// Adopt follows the device when it roamed, settled, to another of the
// site's endpoints: WireGuard sends to the source of the peer's last
// authenticated packet, so the remote moved its traffic to that uplink (its
// own routing did) and it works. Putting the old endpoint back would send
// into the path the remote left, at every reconcile. A move away from the
// preferred endpoint counts as a failover and starts the hold; during a
// trial the chooser's own pick stands. It reports whether Current changed.
func (c *uplinkChooser) Adopt(now time.Time, device netip.AddrPort) bool {
	i := slices.Index(c.endpoints, device)
	if c.phase != uplinkSettled || i < 0 || i == c.cur {
		return false
	}
	c.cur = i
	if i != 0 {
		c.failovers++
	}
	c.settle(now)
	return true
}

// failover moves to the next endpoint for a trial.
// Once every endpoint was tried in vain, each further round's trials last
// twice as long (up to 1 << maxTrialShift times): a site that is down, not
// just one of its uplinks, costs a device call and a log line every few
// seconds at first and every half minute or so after.
func (c *uplinkChooser) failover(now time.Time) {
	if c.phase == uplinkTrying {
		c.misses++
	} else {
		c.misses = 0
	}
	c.cur = (c.cur + 1) % len(c.endpoints)
	factor := time.Duration(1) << min(c.misses/len(c.endpoints), maxTrialShift)
	c.phase, c.deadline = uplinkTrying, now.Add(c.timers.Trial*factor)
	c.failovers++
}

// maxTrialShift bounds the trials' growth: 16 × the trial (26 s at
// 100 ms × 3, 35 s at the default 200 ms × 3).
const maxTrialShift = 4

// settle stays on the current endpoint; on a fallback, the return is due
// after the hold.
func (c *uplinkChooser) settle(now time.Time) {
	c.phase, c.misses = uplinkSettled, 0
	if c.cur == 0 {
		c.hold, c.holdUntil = c.timers.Hold, time.Time{}
		return
	}
	c.holdUntil = now.Add(c.hold)
}

func (c *uplinkChooser) backOff() {
	c.hold = min(2*c.hold, maxHoldFactor*c.timers.Hold)
}

// Due is when Step must run next even if the session does not change
// (zero: only on a change). During a trial the caller also polls the
// session (a session coming up is not reported until the probes' hold).
func (c *uplinkChooser) Due() time.Time {
	switch {
	case len(c.endpoints) < 2:
		return time.Time{}
	case c.phase != uplinkSettled:
		return c.deadline
	case c.cur != 0:
		return c.holdUntil
	}
	return time.Time{}
}

// Trialling reports whether a trial runs (the session is polled then).
func (c *uplinkChooser) Trialling() bool { return c.phase != uplinkSettled }

// NeedsDevice reports whether Step at now will read its device argument.
func (c *uplinkChooser) NeedsDevice(now time.Time) bool {
	return c.phase == uplinkReturning && !now.Before(c.deadline)
}
