package probe

import (
	"net/netip"
	"time"
)

// slowTxInterval is the floor on the desired transmit interval while a
// session is not Up (RFC 5880 §6.8.3: "not less than one second").
const slowTxInterval = time.Second

// initialRemoteMinRx is bfd.RemoteMinRxInterval before anything is heard
// (RFC 5880 §6.8.1 initialises it to 1 µs: send at our own pace).
const initialRemoteMinRx = time.Microsecond

// session is one RFC 5880 asynchronous-mode session with one remote
// gateway. Field comments name the RFC 5880 §6.8.1 state variables. All
// methods run under the engine's lock.
type session struct {
	name   string
	remote netip.Addr

	state           State         // bfd.SessionState
	remoteState     State         // bfd.RemoteSessionState
	localDiscr      uint32        // bfd.LocalDiscr
	remoteDiscr     uint32        // bfd.RemoteDiscr
	localDiag       Diag          // bfd.LocalDiag
	remoteDiag      Diag          // Diag of the last packet received
	desiredMinTx    time.Duration // bfd.DesiredMinTxInterval
	remoteMinRx     time.Duration // bfd.RemoteMinRxInterval
	remoteDesiredTx time.Duration // Desired Min TX of the last packet received
	remoteMult      uint8         // Detect Mult of the last packet received
	remoteDemand    bool          // bfd.RemoteDemandMode

	nextTx   time.Time     // next periodic transmission
	lastTx   time.Time     // last periodic transmission
	curTx    time.Duration // transmit interval that scheduled nextTx
	lastRx   time.Time     // last valid packet for this session
	detectAt time.Time     // detection deadline; zero when not running
	// stallGraced: the detection deadline was moved once because this
	// process had been stalled (engine.graceStall); cleared by a packet.
	stallGraced bool
	retireLeft  int // AdminDown packets still to send after removal

	poll        pollState
	nextRTTPoll time.Time

	// Reported state: what consumers see (anti-flap hold applied).
	reported   State
	since      time.Time
	holdUntil  time.Time // raw state is Up, reported is not yet
	wasUp      bool      // reported Up at least once: later Ups wait for Hold
	downs      uint64    // reported Up → not Up transitions
	downDiag   Diag      // local diag of the last reported down
	rtt, srtt  time.Duration
	txPackets  uint64
	rxPackets  uint64
	txErrors   uint64
	missed     uint64 // estimated lost periodic packets, total
	loss       lossWindow
	prevRx     time.Time     // last periodic packet received while Up
	prevRemote time.Duration // remote transmit interval at prevRx
}

// pollState tracks a Poll Sequence (RFC 5880 §6.5): P rides on periodic
// packets until a packet with F arrives.
type pollState struct {
	active   bool
	sent     int       // packets sent with P in this sequence
	lastSent time.Time // when the last of them left
}

// txInterval is the interval this side transmits at (RFC 5880 §6.8.7): the
// larger of what it wants and what the remote can take.
func (s *session) txInterval() time.Duration { return max(s.desiredMinTx, s.remoteMinRx) }

// remoteTxInterval is the interval the remote transmits at, as far as its
// last packet tells.
func (s *session) remoteTxInterval(requiredMinRx time.Duration) time.Duration {
	return max(s.remoteDesiredTx, requiredMinRx)
}

// detectTime is the asynchronous-mode Detection Time (RFC 5880 §6.8.4):
// the remote's multiplier times the agreed remote transmit interval.
func (s *session) detectTime(requiredMinRx time.Duration) time.Duration {
	return time.Duration(s.remoteMult) * s.remoteTxInterval(requiredMinRx)
}

// demandActive: the remote asked for Demand mode and both sides are Up, so
// periodic transmission must cease (RFC 5880 §6.8.7). dcmesh never asks.
func (s *session) demandActive() bool {
	return s.remoteDemand && s.state == StateUp && s.remoteState == StateUp
}

// missedIn estimates the periodic packets lost in a gap between two
// arrivals, with the remote sending every t jittered to 75-100 % (RFC 5880
// §6.8.7), so k intervals span 0.75·k·t to k·t. Up to two intervals the
// ranges do not overlap and the count is exact: a gap under 1.5t holds one
// interval (a packet counts as lost only when it is half an interval
// late), under 2.25t two. Longer gaps are rounded against the mean
// interval, 0.875t, and may be one off.
func missedIn(gap, t time.Duration) int {
	switch {
	case t <= 0 || gap < t*3/2:
		return 0
	case gap < t*9/4:
		return 1
	}
	k := int((gap*8 + t*7/2) / (t * 7)) // round(gap / 0.875t)
	return k - 1
}

// lossBuckets is the resolution of the sliding loss window.
const lossBuckets = 10

// lossWindow counts periodic packets received and estimated lost in time
// buckets; the window is lossBuckets buckets wide.
type lossWindow struct {
	slot [lossBuckets]lossBucket
}

type lossBucket struct {
	idx        int64 // bucket number since the engine's epoch; 0 = empty
	rx, missed uint64
}

func (w *lossWindow) add(idx int64, rx, missed int) {
	b := &w.slot[idx%lossBuckets]
	if b.idx != idx {
		*b = lossBucket{idx: idx}
	}
	b.rx += uint64(rx)
	b.missed += uint64(missed)
}

// sum totals the buckets within the window ending at bucket idx.
func (w *lossWindow) sum(idx int64) (rx, missed uint64) {
	for _, b := range w.slot {
		if b.idx > idx-lossBuckets && b.idx <= idx {
			rx += b.rx
			missed += b.missed
		}
	}
	return rx, missed
}
