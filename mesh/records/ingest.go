package records

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"log/slog"
	"math/big"
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
// Ingest changes only the store and its own caches; what the gossip layer
// should do (relay, forget) it returns to the agent.

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

// ingest is the agent's progress through received gossip: it decodes,
// dedupes and checks records and revocation lists into the store, and says
// what the agent should do about them (Result) rather than doing it.
type Ingest struct {
	store  *Store
	cas    []*x509.Certificate
	decode func(raw []byte, cas []*x509.Certificate) (*trust.SignedRecord, error)
	policy func() *trust.Policy // what records are checked against, now
	log    *slog.Logger
	own    ownRecord

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

// ownRecord is this gateway's latest record, to recognise it when gossip
// brings it back.
type ownRecord struct {
	node   string // this gateway's node name
	seq    uint64
	serial *big.Int
	raw    []byte
}

type ingestItem struct {
	crl  bool
	data []byte
}

// relay is a message to broadcast further under key (gossip.Broadcast):
// memberlist only retransmits what a node queued itself.
type Relay struct {
	Key string
	Msg []byte
}

// Result is what a turn asks of the agent.
type Result struct {
	Relay  []Relay
	Forget []string // gateways (node names) gone for good (a goodbye, a revocation): stop re-joining them
	CRL    bool     // a newer revocation list was installed: also send it to every member directly
	More   bool     // the payload is not done: schedule another turn
	Commit bool     // the store changed: persist it, refresh the push/pull state, reconcile
}

func NewIngest(store *Store, cas []*x509.Certificate, policy func() *trust.Policy, log *slog.Logger) *Ingest {
	return &Ingest{store: store, cas: cas, policy: policy, log: log, decode: trust.DecodeRecordPinned,
		refused: newRefusedCache(refusedMax, refusedTTL), states: newRefusedCache(64, time.Minute)}
}

// SetDecoder replaces trust.DecodeRecordPinned, which decodes a record and
// checks its signature and that a pinned CA issued its certificate. The
// gossip scale benchmark runs its sites in one process and shares one
// caching decoder among them, so that the process does not do the signature
// checks of a thousand machines; the agent never calls it.
func (in *Ingest) SetDecoder(d func(raw []byte, cas []*x509.Certificate) (*trust.SignedRecord, error)) {
	in.decode = d
}

// Pending is how many records and lists of the current payload wait.
func (in *Ingest) Pending() int { return len(in.items) }

// Skipped counts the payloads skipped because they were refused before.
func (in *Ingest) Skipped() uint64 { return in.skipped }

// Busy reports whether a payload is still being worked through.
func (in *Ingest) Busy() bool { return in != nil && len(in.items) > 0 }

// SetOwn records this gateway's latest record; node is its node name
// (trust.GatewayID.String).
func (in *Ingest) SetOwn(node string, seq uint64, serial *big.Int, raw []byte) {
	in.own = ownRecord{node: node, seq: seq, serial: serial, raw: raw}
}

// reload takes new CAs: what was refused may pass now (the CAs or the local
// prefixes changed), so the caches are forgotten.
func (in *Ingest) Reload(cas []*x509.Certificate) {
	in.cas = cas
	in.refused.reset()
	in.states.reset()
}

// take starts on one received payload: a push/pull state, a record or a
// revocation list is queued for the next turns; any other message is
// returned for the agent (ok), undecoded.
func (in *Ingest) Take(m gossip.Message) (k Kind, payload []byte, ok bool) {
	switch m.Kind {
	case gossip.MsgState:
		h := sha256.Sum256(m.Data)
		if _, seen := in.states.get(h, time.Now()); seen {
			in.skipped++
			return 0, nil, false
		}
		st, err := trust.DecodeState(m.Data)
		if err != nil {
			in.store.Reject("(push/pull state)", err)
			in.states.put(h, trust.ReasonDecode, time.Now())
			return 0, nil, false
		}
		in.state, in.stateChanged = h, false
		for _, c := range st.CRLs {
			in.items = append(in.items, ingestItem{crl: true, data: c})
		}
		for _, r := range st.Records {
			in.items = append(in.items, ingestItem{data: r})
		}
	case gossip.MsgUser:
		k, payload, ok := Decode(m.Data)
		if !ok {
			return 0, nil, false
		}
		in.state = [32]byte{}
		switch k {
		case KindRecord:
			in.items = append(in.items, ingestItem{data: payload})
		case KindCRL:
			in.items = append(in.items, ingestItem{crl: true, data: payload})
		default:
			return k, payload, true
		}
	}
	return 0, nil, false
}

// turn works through the current payload for at most ingestBudget, and
// says whether another turn is needed and whether to commit what changed:
// when the inbox is drained (inboxLen 0), or when a flood has held a change
// back for commitEvery.
func (in *Ingest) Turn(inboxLen int) Result {
	var res Result
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
			changed = in.offerCRL(it.data, &res)
		} else {
			changed = in.offerRecord(it.data, &res)
		}
		if changed {
			in.stateChanged = true
			if !in.changed {
				in.changed, in.since = true, time.Now()
			}
		}
	}
	if in.Busy() {
		res.More = true
	} else {
		in.items = nil // let go of the backing array of a large state
		if in.state != ([32]byte{}) && !in.stateChanged {
			in.states.put(in.state, "", time.Now())
		}
	}
	if in.changed && ((!in.Busy() && inboxLen == 0) || time.Since(in.since) >= commitEvery) {
		in.changed = false
		res.Commit = true
	}
	return res
}

// offerRecord checks one received record and keeps it if it is news; it
// reports whether the store changed.
func (in *Ingest) offerRecord(raw []byte, res *Result) bool {
	// Most records gossip delivers are copies of ones held (a push/pull
	// carries every record) or of ones refused before: recognise them
	// before the signature checks.
	h := sha256.Sum256(raw)
	if in.store.holdsHash(h, raw) || (in.own.raw != nil && bytes.Equal(raw, in.own.raw)) {
		return false
	}
	now := time.Now()
	if reason, ok := in.refused.get(h, now); ok {
		in.store.rejected[reason]++
		in.skipped++
		return false
	}
	sr, err := in.decode(raw, in.cas)
	if err != nil {
		in.refused.put(h, in.store.Reject("(undecodable)", err), now)
		return false
	}
	node := nodeName(sr)
	if node == in.own.node && sr.Seq <= in.own.seq && in.own.serial != nil && sr.Cert.Serial.Cmp(in.own.serial) == 0 {
		return false // our own record, relayed back
	}
	changed, err := in.store.Consider(sr, in.policy())
	if err != nil {
		in.refused.put(h, in.store.Reject(node, err), now)
		return false
	}
	if !changed {
		return false
	}
	in.log.Info("site record accepted", "site", node, "seq", sr.Seq, "wg_key", sr.WGCurrent.Short(), "leaving", sr.Leaving)
	if sr.Leaving {
		res.Forget = append(res.Forget, node)
	}
	if msg := Encode(KindRecord, raw); len(msg) <= gossip.MaxBroadcastSize {
		res.Relay = append(res.Relay, Relay{Key: "record/" + node, Msg: msg})
	}
	return true
}

func (in *Ingest) offerCRL(der []byte, res *Result) bool {
	if in.store.holdsCRL(der) {
		return false // the list held, again
	}
	h := sha256.Sum256(der)
	now := time.Now()
	if reason, ok := in.refused.get(h, now); ok {
		in.store.rejected[reason]++
		in.skipped++
		return false
	}
	crl, err := trust.ParseRevocationList(der, in.cas)
	if err != nil {
		in.refused.put(h, in.store.Reject("(revocation list)", err), now)
		return false
	}
	changed, gone := in.store.InstallCRL(crl)
	if !changed {
		return false
	}
	in.log.Info("revocation list accepted", "number", crl.Number.String(), "revoked", len(crl.Serials))
	res.Forget = append(res.Forget, gone...)
	if msg := Encode(KindCRL, crl.Raw); len(msg) <= gossip.MaxBroadcastSize {
		res.Relay = append(res.Relay, Relay{Key: "crl", Msg: msg})
	}
	res.CRL = true
	return true
}
