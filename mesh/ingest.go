package mesh

import (
	"crypto/sha256"
	"time"

	"github.com/dcmesh/dcmesh/mesh/gossip"
	"github.com/dcmesh/dcmesh/mesh/trust"
)

// Received gossip is untrusted input: anyone with the cluster's gossip key
// can send push/pull states of 4,096 records, ten times a second, each
// record needing a decode and two Ed25519 checks. The agent's loop also
// repairs routes, answers the control API, sends rotation acks and stops on
// SIGTERM, so it must never wait behind that. Three things keep the cost of
// a flood small and bounded:
//
//   - a turn of the loop spends at most ingestBudget on received payloads;
//     the rest of a large state waits for later turns, which are scheduled
//     through a.ingestMore and so compete fairly with every other event;
//   - payloads refused once are remembered by hash (refusedCache), so the
//     repeats gossip delivers cost a hash lookup; whole push/pull states
//     that changed nothing are remembered the same way;
//   - records certified by a CA nobody pins are refused before any
//     signature check (trust.DecodeRecordPinned).
//
// Received messages wait in the gossip layer's bounded inbox, not here: the
// loop takes the next one only when it has finished the current one.

// ingestBudget is the loop time one turn may spend on received gossip.
// Small against the control API's 1 s answer goal and a route repair, large
// enough that a burst of real records (a site joining learns hundreds) is
// not sliced into many turns.
const ingestBudget = 5 * time.Millisecond

// commitEvery bounds how long a steady flood can delay the commit (persist,
// push/pull state, reconcile) of a real change found among it.
const commitEvery = 250 * time.Millisecond

// Refused payloads are remembered for between refusedTTL and twice that, at
// most 2×refusedMax of them (32 bytes of hash and a reason each: ~2 MB).
// The TTL lets a record refused for a reason that time can change (a
// certificate not yet valid) in again; a reload forgets everything, since
// the trusted CAs and local prefixes may have changed.
const (
	refusedTTL = 5 * time.Minute
	refusedMax = 16384
)

// ingest is the agent's progress through received gossip.
type ingest struct {
	// items of the payload being worked through, next first
	items []ingestItem
	// state is the hash of the push/pull state being worked through
	// (zero for a user message); stateChanged whether it changed anything
	state        [32]byte
	stateChanged bool

	changed bool      // the store changed since the last commit
	since   time.Time // of the first uncommitted change

	refused refusedCache // records, CRLs and acks
	states  refusedCache // whole push/pull states that changed nothing
	skipped uint64       // payloads skipped because they were refused before
}

type ingestItem struct {
	crl  bool
	data []byte
}

func newIngest() *ingest {
	return &ingest{refused: newRefusedCache(refusedMax, refusedTTL), states: newRefusedCache(64, time.Minute)}
}

// busy reports whether a payload is still being worked through.
func (in *ingest) busy() bool { return len(in.items) > 0 }

// takeGossip starts on one received payload.
func (a *Agent) takeGossip(rt *runtime, m gossip.Message) {
	in := rt.in
	switch m.Kind {
	case gossip.MsgState:
		h := sha256.Sum256(m.Data)
		if _, seen := in.states.get(h, time.Now()); seen {
			in.skipped++
			return
		}
		st, err := trust.DecodeState(m.Data)
		if err != nil {
			rt.store.reject("(push/pull state)", err)
			in.states.put(h, trust.ReasonDecode, time.Now())
			return
		}
		in.state, in.stateChanged = h, false
		for _, c := range st.CRLs {
			in.items = append(in.items, ingestItem{crl: true, data: c})
		}
		for _, r := range st.Records {
			in.items = append(in.items, ingestItem{data: r})
		}
	case gossip.MsgUser:
		if len(m.Data) == 0 {
			return
		}
		in.state = [32]byte{}
		switch m.Data[0] {
		case msgRecord:
			in.items = append(in.items, ingestItem{data: m.Data[1:]})
		case msgCRL:
			in.items = append(in.items, ingestItem{crl: true, data: m.Data[1:]})
		case msgAck:
			a.onAck(rt, m.Data[1:])
		case msgSwitching:
			a.onSwitching(rt)
		case msgNudge:
			a.onNudge(rt, string(m.Data[1:]))
		}
	}
}

// ingestTurn works through the current payload for at most ingestBudget,
// schedules another turn if it is not done, and commits what changed when
// the inbox is drained (or a flood has held a change back for commitEvery).
func (a *Agent) ingestTurn(rt *runtime, inboxLen int) {
	in := rt.in
	start := time.Now()
	n := 0
	for len(in.items) > 0 {
		// The clock is read every few items: a record costs tens of
		// microseconds at most.
		if n%8 == 7 && time.Since(start) > ingestBudget {
			break
		}
		it := in.items[0]
		in.items[0] = ingestItem{}
		in.items = in.items[1:]
		n++
		var changed bool
		if it.crl {
			changed = a.offerCRL(rt, it.data)
		} else {
			changed = a.offerRecord(rt, it.data)
		}
		if changed {
			in.stateChanged = true
			if !in.changed {
				in.changed, in.since = true, time.Now()
			}
		}
	}
	if in.busy() {
		notify(a.ingestMore)
	} else {
		in.items = nil // let go of the backing array of a large state
		if in.state != ([32]byte{}) && !in.stateChanged {
			in.states.put(in.state, "", time.Now())
		}
	}
	if in.changed && ((!in.busy() && inboxLen == 0) || time.Since(in.since) >= commitEvery) {
		in.changed = false
		a.commitStore(rt)
	}
}

// refusedCache is a bounded set of hashes with an expiry, in two
// generations: lookups check both, inserts go to the current one, and the
// current one becomes the old one (the old one dropped) when it is full or
// ttl has passed.
type refusedCache struct {
	cur, old map[[32]byte]trust.Reason
	max      int
	ttl      time.Duration
	rotated  time.Time
}

func newRefusedCache(max int, ttl time.Duration) refusedCache {
	return refusedCache{cur: map[[32]byte]trust.Reason{}, old: map[[32]byte]trust.Reason{}, max: max, ttl: ttl}
}

func (c *refusedCache) get(h [32]byte, now time.Time) (trust.Reason, bool) {
	c.age(now)
	if r, ok := c.cur[h]; ok {
		return r, true
	}
	r, ok := c.old[h]
	return r, ok
}

func (c *refusedCache) put(h [32]byte, r trust.Reason, now time.Time) {
	c.age(now)
	if len(c.cur) >= c.max {
		c.rotate(now)
	}
	c.cur[h] = r
}

func (c *refusedCache) age(now time.Time) {
	if c.rotated.IsZero() {
		c.rotated = now
	}
	switch d := now.Sub(c.rotated); {
	case d >= 2*c.ttl:
		c.reset()
		c.rotated = now
	case d >= c.ttl:
		c.rotate(now)
	}
}

func (c *refusedCache) rotate(now time.Time) {
	c.old, c.cur, c.rotated = c.cur, make(map[[32]byte]trust.Reason, len(c.cur)), now
}

// reset forgets everything (after a reload: what was refused may pass now).
func (c *refusedCache) reset() {
	clear(c.cur)
	clear(c.old)
}

func (c *refusedCache) len() int { return len(c.cur) + len(c.old) }
