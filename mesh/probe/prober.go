package probe

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// PeerState is one session as consumers see it.
type PeerState struct {
	Name string
	Addr netip.Addr
	// State is the reported state: StateUp only once the session has been
	// Up for the anti-flap Hold (see Config.Hold); during the hold it keeps
	// its previous value and HoldUntil says when it ends.
	State     State
	Since     time.Time // when State last changed
	HoldUntil time.Time
	// Session is the raw RFC 5880 session state, RemoteState the remote's
	// as its last packet said.
	Session, RemoteState State
	// LocalDiag is the reason for the last session state change,
	// RemoteDiag the remote's, DownDiag the reason the session last left
	// Up (DiagNone if it never did).
	LocalDiag, RemoteDiag, DownDiag Diag
	Downs                           uint64 // reported Up → down transitions
	LocalDiscr, RemoteDiscr         uint32
	// TxInterval is this side's current transmit interval, DetectTime the
	// current detection time (0 until the remote was heard).
	TxInterval, DetectTime time.Duration
	// RTT is the last Poll/Final round trip, SRTT its moving average (RFC
	// 6298 weights); 0 until measured. Both include the remote's time to
	// answer, like ping.
	RTT, SRTT time.Duration
	// Loss is the fraction of the remote's periodic packets lost over
	// Config.LossWindow, counted while the session was Up.
	Loss   float64
	LastRx time.Time
	// Totals for rate metrics. Missed is the estimate behind Loss.
	TxPackets, RxPackets, TxErrors, Missed uint64
}

// Stats are the Prober's own counters, for metrics.
type Stats struct {
	Drops // received packets dropped before reaching a session
	// LateTimers counts timer wakeups more than a quarter of Interval
	// past their deadline, MaxTimerDelay is the worst delay seen. A host
	// too busy to run the prober on time shows here first: a delay near
	// the detection time makes peers declare this side down.
	LateTimers    uint64
	MaxTimerDelay time.Duration
	// StallGraces counts sessions whose expired detection time was moved
	// one interval on because the timer loop woke more than half an
	// interval late (engine.graceStall): silence this process caused.
	StallGraces uint64
}

// Prober runs one BFD session with each target over one UDP socket.
type Prober struct {
	cfg     Config
	mu      sync.Mutex // guards eng and stats
	eng     *engine
	stats   Stats
	wake    chan struct{}
	changes chan struct{}
	running atomic.Bool
}

// New validates cfg and returns a Prober with no targets. Nothing is sent
// until Run.
func New(cfg Config) (*Prober, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var seed [32]byte
	_, _ = crand.Read(seed[:]) // never fails (crypto/rand)
	rng := rand.New(rand.NewChaCha8(seed))
	return &Prober{
		cfg:     cfg,
		eng:     newEngine(cfg, rng, time.Now()),
		wake:    make(chan struct{}, 1),
		changes: make(chan struct{}, 1),
	}, nil
}

// SetTargets replaces the set of remote gateways. Sessions for addresses
// already present continue (a new Name is taken); new ones start Down;
// removed ones are dropped from Snapshot at once and tell the remote
// AdminDown. It never blocks on the network. An invalid list is refused
// whole, naming the entry.
func (p *Prober) SetTargets(ts []Target) error {
	if err := validateTargets(&p.cfg, ts); err != nil {
		return err
	}
	p.mu.Lock()
	p.eng.setTargets(ts, time.Now())
	changed := p.eng.changed
	p.eng.changed = false
	p.mu.Unlock()
	if changed {
		signal(p.changes)
	}
	signal(p.wake)
	return nil
}

// Changes returns a channel that receives a value after a reported state
// changes or a target is added or removed. Notifications coalesce: read
// Snapshot after each.
func (p *Prober) Changes() <-chan struct{} { return p.changes }

// Snapshot returns every session, sorted by name then address.
func (p *Prober) Snapshot() []PeerState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.eng.snapshot(time.Now())
}

// Stats returns the Prober's counters.
func (p *Prober) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.stats
	st.Drops = p.eng.drops
	return st
}

// Run opens the socket on Config.Local and Config.Port, runs the sessions
// and returns nil when ctx is done, after sending every peer AdminDown. It
// returns an error if the socket cannot be opened. The socket is created on
// the calling goroutine, so a caller that locked its thread into a network
// namespace gets it there. Run may be called once.
func (p *Prober) Run(ctx context.Context) error {
	if !p.running.CompareAndSwap(false, true) {
		return errors.New("probe: Run called twice")
	}
	conn, err := openSocket(ctx, p.cfg.Local, p.cfg.Port)
	if err != nil {
		return fmt.Errorf("probe: listen on %s: %w", netip.AddrPortFrom(p.cfg.Local, p.cfg.Port), err)
	}
	p.eng.log.Info("probe listening", "addr", conn.urgent.LocalAddr(), "interval", p.cfg.Interval, "multiplier", p.cfg.Multiplier)
	if conn.bulkErr != nil {
		p.eng.log.Info("probe: one socket, every packet wakes the reader", "why", conn.bulkErr)
	}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		p.readLoop(conn)
	}()
	p.timerLoop(ctx, conn)
	p.mu.Lock()
	p.eng.shutdown(time.Now())
	out, changed := p.eng.takeOut(nil)
	p.mu.Unlock()
	p.send(conn, out)
	conn.close()
	<-readDone
	if changed {
		signal(p.changes)
	}
	return nil
}

// timerLoop runs the engine's timers until ctx is done. Each wakeup first
// handles what the bulk socket holds (see socket). Before a detection
// deadline is acted on, it drains the urgent socket too: after this
// process was starved of CPU, packets that arrived in time may still sit
// in the socket buffer, the reader goroutine not yet scheduled, and
// expiring first would be a false down.
func (p *Prober) timerLoop(ctx context.Context, conn *socket) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var out []outPacket
	var deadline time.Time
	rx := newReceiver(p.rxHandler(conn))
	for {
		p.mu.Lock()
		now := time.Now()
		late := time.Duration(0)
		if !deadline.IsZero() {
			late = max(0, now.Sub(deadline))
			p.noteDelay(late)
		}
		expiring := p.eng.expiring(now)
		if expiring && late > p.cfg.Interval/2 {
			p.stats.StallGraces += uint64(p.eng.graceStall(now, p.cfg.Interval))
			expiring = p.eng.expiring(now)
		}
		p.mu.Unlock()
		drained := time.Now()
		if expiring {
			conn.drain(rx.buf, rx.oob, rx.collect)
		} else {
			conn.drainBulk(rx.buf, rx.oob, rx.collect)
		}
		rx.flush()
		p.noteDrained(drained)
		p.mu.Lock()
		now = time.Now()
		deadline = p.eng.advance(now)
		initWait := p.eng.anyInit()
		var changed bool
		out, changed = p.eng.takeOut(out)
		p.mu.Unlock()
		p.send(conn, out)
		if changed {
			signal(p.changes)
		}
		wait := time.Hour
		if !deadline.IsZero() {
			wait = deadline.Sub(now)
		}
		if initWait { // its remote's Up packets wait in the bulk socket
			wait = min(wait, p.cfg.Interval/10)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-p.wake: // woken before the deadline, late is 0; after it, it counts
		}
	}
}

// noteDrained records that everything the bulk socket received before t
// has been handled: Snapshot's loss counts an open gap only up to there.
func (p *Prober) noteDrained(t time.Time) {
	p.mu.Lock()
	if t.After(p.eng.rxSeen) {
		p.eng.rxSeen = t
	}
	p.mu.Unlock()
}

// noteDelay records how late a timer wakeup was. Called with mu held.
func (p *Prober) noteDelay(late time.Duration) {
	if late > p.cfg.Interval/4 {
		p.stats.LateTimers++
	}
	p.stats.MaxTimerDelay = max(p.stats.MaxTimerDelay, late)
}

// readLoop receives until the socket is closed. Each packet is handled
// here, so a Final answer leaves without a detour through the timer loop
// (it matters for the peer's RTT).
func (p *Prober) readLoop(conn *socket) {
	buf := make([]byte, 512)
	oob := make([]byte, oobSize)
	rx := newReceiver(p.rxHandler(conn))
	backoff := time.Millisecond
	for {
		n, oobn, _, src, err := conn.urgent.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Not expected on an unconnected UDP socket; if it
			// persists, do not spin on it.
			p.eng.log.Debug("probe read", "err", err)
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = time.Millisecond
		ttl, stamp := parseOOB(oob[:oobn])
		// What the bulk socket holds arrived before, or with, this
		// packet: handle all of it in the kernel's arrival order, so a
		// session never sees an older packet after a newer one.
		rx.collect(buf[:n], src.Addr().Unmap(), ttl, rxTime(stamp, time.Now()))
		drained := time.Now()
		conn.drainBulk(rx.buf, rx.oob, rx.collect)
		rx.flush()
		p.noteDrained(drained)
	}
}

// receiver gathers datagrams read from both sockets and hands them to the
// engine sorted by arrival time. Each goroutine that receives has its own.
type receiver struct {
	handle   rxFunc
	buf, oob []byte // for reads
	pkts     []rxPacket
	data     []byte // the payloads of pkts, back to back
}

type rxPacket struct {
	off, n int
	src    netip.Addr
	ttl    int
	at     time.Time
}

func newReceiver(handle rxFunc) *receiver {
	return &receiver{handle: handle, buf: make([]byte, 512), oob: make([]byte, oobSize)}
}

// collect is an rxFunc that keeps a copy of the datagram for flush.
func (r *receiver) collect(b []byte, src netip.Addr, ttl int, at time.Time) {
	r.pkts = append(r.pkts, rxPacket{off: len(r.data), n: len(b), src: src, ttl: ttl, at: at})
	r.data = append(r.data, b...)
}

// flush handles what collect kept, oldest first.
func (r *receiver) flush() {
	slices.SortStableFunc(r.pkts, func(a, b rxPacket) int { return a.at.Compare(b.at) })
	for _, q := range r.pkts {
		r.handle(r.data[q.off:q.off+q.n], q.src, q.ttl, q.at)
	}
	r.pkts, r.data = r.pkts[:0], r.data[:0]
}

// rxFunc handles one received datagram: its payload, source, TTL (-1 if
// unknown) and when it arrived.
type rxFunc func(b []byte, src netip.Addr, ttl int, now time.Time)

// rxHandler returns a function that hands one datagram to the engine and
// sends what it answers. Each goroutine that receives uses its own.
func (p *Prober) rxHandler(conn *socket) rxFunc {
	var out []outPacket
	return func(b []byte, src netip.Addr, ttl int, now time.Time) {
		p.mu.Lock()
		before := p.eng.nextDeadline()
		p.eng.receive(b, src, ttl, now)
		after := p.eng.nextDeadline()
		var changed bool
		out, changed = p.eng.takeOut(out)
		p.mu.Unlock()
		p.send(conn, out)
		if changed {
			signal(p.changes)
		}
		if after.Before(before) {
			signal(p.wake) // a state change moved a transmission earlier
		}
	}
}

// send writes the packets. A failure (no route yet, a WireGuard peer
// without a key: ENOKEY) is counted on the session, not fatal: the probe
// is what finds out the path is broken.
func (p *Prober) send(conn *socket, out []outPacket) {
	for i := range out {
		o := &out[i]
		if err := conn.send(o.b[:], netip.AddrPortFrom(o.dst, p.cfg.Port)); err != nil {
			p.mu.Lock()
			if s := p.eng.byAddr[o.dst]; s != nil {
				s.txErrors++
				if s.txErrors == 1 || s.txErrors%1000 == 0 {
					p.eng.log.Debug("probe send", "peer", s.name, "addr", o.dst, "err", err, "errors", s.txErrors)
				}
			}
			p.mu.Unlock()
		}
	}
}

// rxTime is when a packet arrived: the kernel's receive timestamp, taken
// as an age subtracted from now, so the result keeps now's monotonic clock
// reading. Without a stamp, or with one that is in the future or over a
// second old (the wall clock stepped), it is now.
func rxTime(stamp, now time.Time) time.Time {
	if stamp.IsZero() {
		return now
	}
	age := now.Round(0).Sub(stamp)
	if age < 0 || age > time.Second {
		return now
	}
	return now.Add(-age)
}

// signal makes a non-blocking, coalescing send.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// snapshot copies every session's consumer view.
func (e *engine) snapshot(now time.Time) []PeerState {
	ps := make([]PeerState, 0, len(e.list))
	seen := now
	if !e.rxSeen.IsZero() && e.rxSeen.Before(now) {
		seen = e.rxSeen
	}
	for _, s := range e.list {
		st := PeerState{
			Name: s.name, Addr: s.remote, State: s.reported, Since: s.since, HoldUntil: s.holdUntil,
			Session: s.state, RemoteState: s.remoteState,
			LocalDiag: s.localDiag, RemoteDiag: s.remoteDiag, DownDiag: s.downDiag, Downs: s.downs,
			LocalDiscr: s.localDiscr, RemoteDiscr: s.remoteDiscr, TxInterval: s.txInterval(),
			RTT: s.rtt, SRTT: s.srtt, LastRx: s.lastRx,
			TxPackets: s.txPackets, RxPackets: s.rxPackets, TxErrors: s.txErrors, Missed: s.missed,
		}
		if s.remoteMult > 0 {
			st.DetectTime = s.detectTime(e.cfg.Interval)
		}
		rx, missed := s.loss.sum(e.bucket(now))
		if s.state == StateUp && !s.prevRx.IsZero() && seen.After(s.prevRx) {
			missed += uint64(missedIn(seen.Sub(s.prevRx), s.prevRemote)) // the gap still open
		}
		if rx+missed > 0 {
			st.Loss = float64(missed) / float64(rx+missed)
		}
		ps = append(ps, st)
	}
	return ps
}
