package records

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"slices"
	"sort"
	"time"

	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/wg"
)

// Store keeps, per gateway of every other site (keyed by node name, see
// gateways.go), the newest record that passed the trust checks and the
// highest sequence number ever accepted from each holder (so a replayed
// older record is refused, also after a restart), plus the newest
// revocation list. It is persisted in the state directory; a corrupt file
// stops the agent.
type Store struct {
	path    string
	log     *slog.Logger
	records map[string]*trust.SignedRecord // by node name
	// highest is, per node name, the highest sequence number accepted from
	// any holder of the gateway (the state file's highest_seq, what the
	// previous layout kept per site); holderSeq per holder (holderKey), what
	// records are checked against.
	highest   map[string]uint64
	holderSeq map[string]uint64
	// floor is, per node name, the number a state file of the previous
	// layout (one per site) held: which holder it was of is not known, so
	// it is the floor for every holder of the gateway without a number of
	// its own. Persisted (floor_seq), so that a save does not lose it.
	floor map[string]uint64
	// expiry is the record expiry (SetRecordExpiry), 0 if not set
	expiry time.Duration
	crl    *trust.RevocationList   // the list installed last
	crls   []*trust.RevocationList // the newest list of each CA (crls.go)

	rejected map[trust.Reason]uint64
	logged   map[string]time.Time // rejection log lines, at most one per key per logEvery
	window   time.Time            // start of the current logEvery window
	lines    int                  // rejection lines logged in it

	// held maps the hash of each record held to its node name, so a record that
	// gossip repeats (every push/pull carries them all) is recognised
	// before it is decoded and its signatures checked. Entries of records
	// since replaced are skipped by holds and swept in remember.
	held map[[32]byte]string
}

const logEvery = 10 * time.Minute

// maxSiteStoreSize bounds records.json: a full push/pull state in base64
// plus the CRL.
const maxSiteStoreSize = 2 * trust.MaxStateSize

// storeFile is the on-disk form (JSON; records and CRL as base64 DER).
// HighestSeq is per node name (the previous layout's, per site: gateway 0's
// node name is the site name, so such a file loads); HolderSeq, per holder,
// and FloorSeq (Store.floor) are what this version goes by: a file without
// HolderSeq is of the previous layout, its HighestSeq the floor.
type storeFile struct {
	Version    int               `json:"version"`
	HighestSeq map[string]uint64 `json:"highest_seq"`
	HolderSeq  map[string]uint64 `json:"holder_seq,omitempty"`
	FloorSeq   map[string]uint64 `json:"floor_seq,omitempty"`
	Records    [][]byte          `json:"records"`
	CRL        []byte            `json:"crl,omitempty"`  // the list installed last (all an older release reads)
	CRLs       [][]byte          `json:"crls,omitempty"` // the newest of each CA
}

func NewStore(path string, log *slog.Logger) *Store {
	return &Store{path: path, log: log, records: map[string]*trust.SignedRecord{}, highest: map[string]uint64{}, holderSeq: map[string]uint64{}, floor: map[string]uint64{},
		rejected: map[trust.Reason]uint64{}, logged: map[string]time.Time{}, held: map[[32]byte]string{}}
}

// holds reports whether raw is exactly a record the store holds.
func (s *Store) Holds(raw []byte) bool { return s.holdsHash(sha256.Sum256(raw), raw) }

// Record returns the record held for the gateway named node
// (trust.GatewayID.String: "fra1", "fra1.1").
func (s *Store) Record(node string) (*trust.SignedRecord, bool) {
	sr, ok := s.records[node]
	return sr, ok
}

// CRL returns the revocation list held, or nil.
func (s *Store) CRL() *trust.RevocationList { return s.crl }

// Rejected returns how many records, acks and lists were refused, by
// reason, since the store was created.
func (s *Store) Rejected() map[trust.Reason]uint64 { return maps.Clone(s.rejected) }

// holdsHash is Holds for a caller that has the SHA-256 h of raw already.
func (s *Store) holdsHash(h [32]byte, raw []byte) bool {
	node, ok := s.held[h]
	return ok && s.records[node] != nil && bytes.Equal(s.records[node].Raw, raw)
}

// remember sets sr as its gateway's record.
func (s *Store) remember(sr *trust.SignedRecord) {
	node := nodeName(sr)
	s.records[node] = sr
	if len(s.held) > 2*len(s.records)+64 {
		clear(s.held)
		for n, r := range s.records {
			s.held[sha256.Sum256(r.Raw)] = n
		}
	}
	s.held[sha256.Sum256(sr.Raw)] = node
}

// LoadStore reads the store at path; cas verify the stored CRL. A missing
// file is an empty store; anything else that fails is fatal: the file carries
// the replay protection.
func LoadStore(path string, log *slog.Logger, cas []*x509.Certificate) (*Store, error) {
	s := NewStore(path, log)
	raw, err := wg.ReadStateFile(path, maxSiteStoreSize)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read site records: %w", err)
	}
	var f storeFile
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, fmt.Errorf("state file %s is corrupt (%v): it holds the replay protection for site records, so dcmesh will not guess; move it away to start over (records are relearned from gossip)", path, err)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("state file %s has format version %d, which this dcmesh does not know (written by a newer release?); move it away to start over (records are relearned from gossip)", path, f.Version)
	}
	maps.Copy(s.highest, f.HighestSeq)
	maps.Copy(s.holderSeq, f.HolderSeq)
	maps.Copy(s.floor, f.FloorSeq)
	if f.HolderSeq == nil {
		// The previous layout: one number per site, gateway 0's node name
		// (or this layout before anything was accepted: the same numbers).
		maps.Copy(s.floor, f.HighestSeq)
	}
	for _, b := range f.Records {
		sr, err := trust.DecodeRecord(b)
		if err != nil {
			return nil, fmt.Errorf("state file %s holds an unreadable record (%v); move it away to start over", path, err)
		}
		s.remember(sr)
	}
	for _, der := range append(f.CRLs, f.CRL) {
		if len(der) == 0 {
			continue
		}
		crl, err := trust.ParseRevocationList(der, cas)
		if err != nil {
			if _, perr := x509.ParseRevocationList(der); perr == nil {
				// A list of a CA no longer pinned (after a CA rollover):
				// it revokes nothing that verifies now.
				log.Info("dropping the stored revocation list of a CA no longer pinned", "err", err)
				continue
			}
			return nil, fmt.Errorf("state file %s holds an invalid revocation list (%v); move it away and hand the list to the agent again with `dcmesh revoke`", path, err)
		}
		s.setCRL(crl)
	}
	return s, nil
}

func (s *Store) Save() error {
	f := storeFile{Version: 1, HighestSeq: s.highest, HolderSeq: s.holderSeq, FloorSeq: s.floor}
	for _, name := range s.Names() {
		f.Records = append(f.Records, s.records[name].Raw)
	}
	if s.crl != nil {
		f.CRL = s.crl.Raw
	}
	for _, l := range s.crls {
		f.CRLs = append(f.CRLs, l.Raw)
	}
	raw, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return wg.WriteFileAtomic(s.path, raw, 0o600)
}

func (s *Store) Names() []string {
	names := make([]string, 0, len(s.records))
	for n := range s.records {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Offer runs the trust checks on a record and keeps it if it is the newest
// valid one for its gateway. It reports whether the store changed; a
// refusal is counted and logged (reject).
func (s *Store) Offer(sr *trust.SignedRecord, p *trust.Policy) bool {
	changed, err := s.Consider(sr, p)
	if err != nil {
		s.Reject(nodeName(sr), err)
	}
	return changed
}

// consider is offer without the bookkeeping of a refusal: it returns the
// *trust.RejectError for the caller to count with reject.
func (s *Store) Consider(sr *trust.SignedRecord, p *trust.Policy) (bool, error) {
	if sr == nil || sr.Cert == nil {
		return false, &trust.RejectError{Reason: trust.ReasonDecode, Detail: "no record"}
	}
	if cur, ok := s.records[nodeName(sr)]; ok && bytes.Equal(cur.Raw, sr.Raw) {
		return false, nil // the same record again: gossip repeats itself
	}
	if err := p.CheckRecord(sr, "", s.highestFor(sr)); err != nil {
		return false, err
	}
	if err := s.duplicateGateway(sr, p); err != nil {
		return false, err
	}
	s.remember(sr)
	s.holderSeq[holderKey(sr)] = sr.Seq
	s.highest[nodeName(sr)] = max(s.highest[nodeName(sr)], sr.Seq)
	return true, nil
}

// Reject counts a refused record and logs it, returning the reason; name
// is the gateway's node name (or what stands for it: "(ack)"). A
// record whose identity was proven (its certificate chains to a pinned CA)
// is logged at most once per gateway and reason every logEvery, however often
// gossip repeats it; one whose identity was not is logged at most once per
// reason: its site name is whatever the sender chose, and a flood of
// invented names must not become a flood of log lines. Either way at most
// rejectLines lines per logEvery; the counters say the rest.
func (s *Store) Reject(name string, err error) trust.Reason {
	reason := trust.ReasonDecode
	var re *trust.RejectError
	if errors.As(err, &re) {
		reason = re.Reason
	}
	s.rejected[reason]++
	key := string(reason)
	switch reason {
	case trust.ReasonDecode, trust.ReasonSignature, trust.ReasonUnknownCA:
	default:
		key += "/" + name
	}
	now := time.Now()
	if last, ok := s.logged[key]; ok && now.Sub(last) < logEvery {
		return reason
	}
	if now.Sub(s.window) >= logEvery {
		s.window, s.lines = now, 0
	}
	if s.lines >= rejectLines || len(s.logged) > 10000 {
		return reason
	}
	s.lines++
	s.logged[key] = now
	level := slog.LevelWarn
	if reason == trust.ReasonReplay {
		// Gossip delivers old copies after new ones all the time; a replay
		// looks the same and is just as harmless once refused. Counted.
		level = slog.LevelDebug
	}
	s.log.Log(context.Background(), level, "site record rejected", "site", truncateName(name), "reason", string(reason), "err", err,
		"note", "repeats are counted in records_rejected, not logged")
	return reason
}

// rejectLines bounds rejection log lines per logEvery.
const rejectLines = 20

// truncateName keeps a log line short when a name came from the network.
func truncateName(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// setCRL keeps crl if it is newer than the one held of its CA, and drops
// the records of sites it revokes. It reports whether anything changed.
func (s *Store) setCRL(crl *trust.RevocationList) bool {
	i := s.crlIndex(crl)
	if i >= 0 && !crl.NewerThan(s.crls[i]) {
		return false
	}
	if i >= 0 {
		s.crls[i] = crl
	} else {
		s.crls = append(s.crls, crl)
	}
	s.crl = crl
	for name, sr := range s.records {
		if crl.Revoked(sr.Cert.Serial) && appliesTo(crl, sr.Cert) {
			s.log.Warn("gateway certificate revoked; removing the gateway", "site", name, "serial", sr.Cert.Serial.Text(16))
			delete(s.records, name)
		}
	}
	return true
}

// InstallCRL keeps crl if it is newer than the one held; it reports whether
// it did, and the gateways it removed (node names) (revoked: the gossip layer should stop
// re-joining them).
func (s *Store) InstallCRL(crl *trust.RevocationList) (changed bool, gone []string) {
	held := s.Names()
	if !s.setCRL(crl) {
		return false, nil
	}
	for _, name := range held {
		if s.records[name] == nil {
			gone = append(gone, name)
		}
	}
	return true, gone
}

// VerifyAck decodes a rotation ack and checks that the gateway it names
// (From, a node name) signed it, for the gateway named to (this agent's
// node name); it returns the ack and that gateway's current WireGuard key.
// An ack that fails is counted (reject); one from a gateway the store does
// not hold, or for another gateway, is ignored.
func (s *Store) VerifyAck(raw []byte, to string) (*trust.Ack, wg.PublicKey, bool) {
	ack, err := trust.DecodeAck(raw)
	if err != nil {
		s.Reject("(ack)", err)
		return nil, wg.PublicKey{}, false
	}
	sr, ok := s.records[ack.From]
	if !ok || ack.To != to {
		return nil, wg.PublicKey{}, false
	}
	if _, err := trust.VerifyAck(raw, sr.Cert.IdentityKey); err != nil {
		s.Reject(ack.From, err)
		return nil, wg.PublicKey{}, false
	}
	return ack, sr.WGCurrent, true
}

// Site is a remote site as the data plane needs it.
type Site struct {
	Name string // the site's name; several gateways of a site share it
	// Gateway is the index of this gateway of the site (0 for a
	// one-gateway site): a Site is one (site, gateway), see ID.
	Gateway   uint8
	PublicKey wg.PublicKey
	// Next is the site's announced next key while it rotates, else zero.
	Next     wg.PublicKey
	Seq      uint64     // of the record this came from
	Overlay  netip.Addr // the site's overlay address (also in Prefixes)
	Endpoint netip.AddrPort
	// Endpoints are all the site's uplinks, the preferred (Endpoint) first.
	Endpoints []netip.AddrPort
	Prefixes  []netip.Prefix
	// KEM is the site's ML-KEM key while it rotates with pre-shared keys;
	// PSKSites the sites it holds a pre-shared key for.
	KEM      []byte
	PSKSites []string
	// PSK and NextPSK are our pre-shared keys for its keys (set by the agent).
	PSK, NextPSK wg.PresharedKey
	// Weight is the gateway's share of its site's traffic among the site's
	// active gateways (the record's, 1 to 255; a record's Go zero is 1).
	// It is 0 exactly when Standby.
	Weight int
	// Standby: the gateway carries traffic only while no active gateway of
	// its site is healthy.
	Standby bool
	// Drain: the gateway is under planned maintenance; peers take it out of
	// their groups but keep it a peer.
	Drain bool
}

// ID names the gateway this Site is.
func (s Site) ID() trust.GatewayID { return trust.GatewayID{Site: s.Name, Gateway: s.Gateway} }

// Node is the gateway's node name (ID().String()): "fra1" for gateway 0,
// "fra1.1" for gateway 1. Gossip, acks, PSKSites, status and metric labels
// use it.
func (s Site) Node() string { return s.ID().String() }

// Active returns the gateways to program now, one Site per (site,
// gateway), sorted by site name and gateway index: records that are not a
// goodbye, not expired (IssuedAt + expiry) and whose certificate is still
// valid and not revoked, settled by trust.ResolveGateways (two certificates
// for one gateway: the older; prefixes claimed by two sites: the older
// claim; gateways of one site share its prefixes). Siblings — other
// gateways of the local site (p.LocalSite) — take part in the settling, so
// that this view agrees with the rest of the cluster's, but are never
// returned: they are no peers. A gateway whose record has no endpoint is
// not returned either. Conflicts are logged by the caller.
func (s *Store) Active(p *trust.Policy, expiry time.Duration) ([]Site, []trust.Conflict) {
	won, conflicts := trust.ResolveGateways(s.live(p, expiry))
	out := make([]Site, 0, len(won))
	for id, r := range won {
		sr := r.Record
		if id.Site == p.LocalSite || len(sr.Endpoints) == 0 {
			continue
		}
		out = append(out, activeSite(sr, r.Prefixes))
	}
	slices.SortFunc(out, func(a, b Site) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Gateway, b.Gateway))
	})
	return out, conflicts
}

// live returns copies of the records Active considers, each with its
// overlay address added to its prefixes: the gateway's own address is
// routed like a prefix.
func (s *Store) live(p *trust.Policy, expiry time.Duration) []*trust.SignedRecord {
	var live []*trust.SignedRecord
	for _, name := range s.Names() {
		sr := s.records[name]
		if sr.Leaving || p.Now.Sub(sr.IssuedAt) > expiry {
			continue
		}
		if err := sr.Cert.Verify(p.CAs, policyCRLs(p), p.Now, p.Skew); err != nil {
			continue
		}
		cp := *sr
		ov := sr.Cert.Overlay
		cp.Prefixes = append(slices.Clone(sr.Prefixes), netip.PrefixFrom(ov, ov.BitLen()))
		live = append(live, &cp)
	}
	return live
}

// activeSite is the Site of a record that survived, with its kept prefixes.
func activeSite(sr *trust.SignedRecord, prefixes []netip.Prefix) Site {
	rs := Site{Name: sr.Site, Gateway: sr.Cert.Gateway, PublicKey: sr.WGCurrent, Seq: sr.Seq, Overlay: sr.Cert.Overlay,
		Endpoint: sr.Endpoints[0], Endpoints: sr.Endpoints, Prefixes: prefixes, PSKSites: sr.PSKSites}
	if sr.Phase == trust.PhasePrepared {
		rs.Next, rs.KEM = sr.WGNext, sr.KEM
	}
	rs.Weight, rs.Standby, rs.Drain = siteWeight(&sr.Record), sr.Standby, sr.Drain
	return rs
}

// Roster returns, for the gossip layer, the gossip address of every gateway
// whose record the store holds and whose certificate is valid now, by node
// name (siblings too): the names gossip may count as members and send to
// (gossip.SetRoster). A site that
// said goodbye stays (status lists it as left; the agent tells gossip to
// Forget its address, so nobody re-joins it).
func (s *Store) Roster(p *trust.Policy) map[string]netip.AddrPort {
	out := make(map[string]netip.AddrPort, len(s.records))
	for name, sr := range s.records {
		if !sr.Gossip.IsValid() {
			continue
		}
		if sr.Cert.Verify(p.CAs, policyCRLs(p), p.Now, p.Skew) != nil {
			continue
		}
		out[name] = sr.Gossip
	}
	return out
}

// state returns every record and the CRL, encoded for push/pull.
func (s *Store) State(own *trust.SignedRecord) ([]byte, error) {
	var st trust.State
	if own != nil {
		st.Records = append(st.Records, own.Raw)
	}
	for _, n := range s.Names() {
		st.Records = append(st.Records, s.records[n].Raw)
	}
	for _, l := range s.crls {
		st.CRLs = append(st.CRLs, l.Raw)
	}
	return trust.EncodeState(st)
}

// siteWeight is the record's weight as Site carries it: 0 for a standby
// gateway, the record's Go zero as 1 (a record built without weights).
func siteWeight(r *trust.Record) int {
	switch {
	case r.Standby:
		return 0
	case r.Weight == 0:
		return 1
	}
	return int(r.Weight)
}
