package probe

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// The simulation: engines wired together through an in-memory network with
// a fixed one-way latency, run as a discrete-event loop on a fake clock. It
// is deterministic (seeded jitter), so times can be asserted exactly.

var (
	addrA = netip.MustParseAddr("10.255.0.1")
	addrB = netip.MustParseAddr("10.255.0.2")
	addrC = netip.MustParseAddr("10.255.0.3")
)

var t0 = time.Date(2026, 9, 1, 12, 0, 0, 0, time.UTC)

func seeded(n uint64) *rand.Rand {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], n)
	return rand.New(rand.NewChaCha8(seed))
}

type inflight struct {
	at       time.Time
	from, to netip.Addr
	ttl      int
	b        []byte
}

// sent is one packet as it left a node, for assertions.
type sent struct {
	at       time.Time
	from, to netip.Addr
	p        Packet
}

type simNet struct {
	t       testing.TB
	now     time.Time
	latency time.Duration
	nodes   map[netip.Addr]*engine
	order   []netip.Addr
	queue   []inflight
	log     []sent
	// drop, if set, loses a packet at the sender; mutate may edit it.
	drop   func(from, to netip.Addr, p Packet) bool
	mutate func(from, to netip.Addr, p *Packet)
	// dropped counts packets drop discarded.
	dropped int
}

func newSim(t testing.TB, latency time.Duration) *simNet {
	return &simNet{t: t, now: t0, latency: latency, nodes: map[netip.Addr]*engine{}}
}

// add creates an engine at addr probing targets.
func (n *simNet) add(addr netip.Addr, cfg Config, seed uint64, targets ...netip.Addr) *engine {
	n.t.Helper()
	cfg.Local = addr
	if err := cfg.Validate(); err != nil {
		n.t.Fatal(err)
	}
	e := newEngine(cfg, seeded(seed), n.now)
	var ts []Target
	for _, a := range targets {
		ts = append(ts, Target{Name: "gw-" + a.String(), Addr: a})
	}
	if err := validateTargets(&cfg, ts); err != nil {
		n.t.Fatal(err)
	}
	e.setTargets(ts, n.now)
	if _, ok := n.nodes[addr]; !ok {
		n.order = append(n.order, addr)
	}
	n.nodes[addr] = e
	n.collect(addr)
	return e
}

// collect moves a node's outgoing packets onto the wire.
func (n *simNet) collect(from netip.Addr) {
	e := n.nodes[from]
	out, _ := e.takeOut(nil)
	for _, o := range out {
		p, err := ParsePacket(o.b[:])
		if err != nil {
			n.t.Fatalf("%s sent an invalid packet %x: %v", from, o.b, err)
		}
		n.log = append(n.log, sent{n.now, from, o.dst, p})
		if n.drop != nil && n.drop(from, o.dst, p) {
			n.dropped++
			continue
		}
		b := o.b[:]
		if n.mutate != nil {
			n.mutate(from, o.dst, &p)
			b = p.Append(nil)
		}
		n.queue = append(n.queue, inflight{n.now.Add(n.latency), from, o.dst, 255, slices.Clone(b)})
	}
}

// inject puts a raw datagram on the wire to arrive now.
func (n *simNet) inject(from, to netip.Addr, ttl int, b []byte) {
	n.queue = append(n.queue, inflight{n.now, from, to, ttl, b})
}

// step runs the next event no later than limit; false if there is none.
func (n *simNet) step(limit time.Time) bool {
	next := time.Time{}
	if len(n.queue) > 0 {
		next = n.queue[0].at
	}
	for _, a := range n.order {
		if d := n.nodes[a].nextDeadline(); !d.IsZero() && (next.IsZero() || d.Before(next)) {
			next = d
		}
	}
	if next.IsZero() || next.After(limit) {
		return false
	}
	if next.After(n.now) {
		n.now = next
	}
	for len(n.queue) > 0 && !n.queue[0].at.After(n.now) {
		f := n.queue[0]
		n.queue = n.queue[1:]
		if e := n.nodes[f.to]; e != nil {
			e.receive(f.b, f.from, f.ttl, n.now)
			n.collect(f.to)
		}
	}
	for _, a := range n.order {
		n.nodes[a].advance(n.now)
		n.collect(a)
	}
	return true
}

// runFor runs the simulation for d.
func (n *simNet) runFor(d time.Duration) {
	limit := n.now.Add(d)
	for n.step(limit) {
	}
	n.now = limit
}

// runUntil runs until cond holds (checked after every event) and returns
// the time it first held; it fails the test after max.
func (n *simNet) runUntil(max time.Duration, what string, cond func() bool) time.Time {
	n.t.Helper()
	limit := n.now.Add(max)
	for !cond() {
		if !n.step(limit) {
			n.t.Fatalf("after %v: %s never happened", max, what)
		}
	}
	return n.now
}

// peer returns e's view of the session with addr at the current time.
func (n *simNet) peer(e *engine, addr netip.Addr) PeerState {
	n.t.Helper()
	for _, s := range e.snapshot(n.now) {
		if s.Addr == addr {
			return s
		}
	}
	n.t.Fatalf("no session with %s", addr)
	return PeerState{}
}

func (n *simNet) reported(e *engine, addr netip.Addr) State { return n.peer(e, addr).State }
func (n *simNet) session(e *engine, addr netip.Addr) State  { return n.peer(e, addr).Session }

// pair brings up A and B with cfg and returns them once both report Up
// and have run a second more: until each has heard the other's first Up
// packet, the detection time still follows the slow Down-state interval
// (3 s), so tests that cut the link start from the steady state.
func pair(t *testing.T, cfg Config, latency time.Duration) (*simNet, *engine, *engine) {
	t.Helper()
	n := newSim(t, latency)
	a := n.add(addrA, cfg, 1, addrB)
	b := n.add(addrB, cfg, 2, addrA)
	n.runUntil(5*time.Second, "both up", func() bool {
		return n.reported(a, addrB) == StateUp && n.reported(b, addrA) == StateUp
	})
	n.runFor(time.Second)
	return n, a, b
}

// cut drops every packet from 'from' to 'to' from now on.
func cut(n *simNet, from, to netip.Addr) {
	n.drop = func(f, d netip.Addr, _ Packet) bool { return f == from && d == to }
}
