package records

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"log/slog"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
	"github.com/dcmesh/dcmesh/wg"
)

func quietStore(path string) *Store { return NewStore(path, slog.New(slog.DiscardHandler)) }

func gw(n uint8) trusttest.CertOptions { return trusttest.CertOptions{Gateway: n} }

func mustOffer(t *testing.T, s *Store, p *trust.Policy, srs ...*trust.SignedRecord) {
	t.Helper()
	for _, sr := range srs {
		if changed, err := s.Consider(sr, p); !changed || err != nil {
			t.Fatalf("record of %s (seq %d) not taken: changed %v, %v", sr.ID(), sr.Seq, changed, err)
		}
	}
}

// siteIDs renders Active's answer as node names with their prefixes.
type activeGateway struct {
	node     string
	key      wg.PublicKey
	prefixes string
}

func activeGateways(sites []Site) []activeGateway {
	var out []activeGateway
	for _, s := range sites {
		ps, _ := json.Marshal(s.Prefixes)
		out = append(out, activeGateway{s.Node(), s.PublicKey, string(ps)})
	}
	return out
}

func prefixesJSON(t *testing.T, ss ...string) string {
	b, _ := json.Marshal(trusttest.Prefixes(t, ss...))
	return string(b)
}

// A gateway-1 record is held beside gateway 0's, whatever their sequence
// numbers: the store is keyed by node name.
func TestStoreGatewayOneDoesNotDisplaceGatewayZero(t *testing.T) {
	ca := trusttest.NewCA(t)
	p := trusttest.Policy(t, ca, "fra1", "10.1.0.0/16")
	ams0 := newTestSite(t, ca, "ams1", gw(0), "10.2.0.0/16")
	ams1 := newTestSite(t, ca, "ams1", gw(1), "10.2.0.0/16")
	s := quietStore("")
	mustOffer(t, s, p, ams0.record(t, trusttest.RecordOptions{Seq: 5}), ams1.record(t, trusttest.RecordOptions{Seq: 9}))
	if got, want := s.Names(), []string{"ams1", "ams1.1"}; !slices.Equal(got, want) {
		t.Fatalf("names %v, want %v", got, want)
	}
	for node, key := range map[string]wg.PublicKey{"ams1": trusttest.WGKey("ams1"), "ams1.1": trusttest.WGKey("ams1.1")} {
		if sr, ok := s.Record(node); !ok || sr.WGCurrent != key {
			t.Errorf("Record(%q) = %v, %v", node, sr, ok)
		}
	}
	// Each gateway's replay protection is its own.
	mustOffer(t, s, p, ams0.record(t, trusttest.RecordOptions{Seq: 6}))
	if changed, err := s.Consider(ams1.record(t, trusttest.RecordOptions{Seq: 9, IssuedAt: time.Now().Add(time.Second)}), p); changed || !isReason(err, trust.ReasonReplay) {
		t.Errorf("gateway 1 replay: changed %v, %v", changed, err)
	}
	got, conflicts := s.Active(p, time.Hour)
	want := []activeGateway{
		{"ams1", trusttest.WGKey("ams1"), prefixesJSON(t, "10.2.0.0/16", ams0.cert.Overlay.String()+"/32")},
		{"ams1.1", trusttest.WGKey("ams1.1"), prefixesJSON(t, "10.2.0.0/16", ams1.cert.Overlay.String()+"/32")},
	}
	if !slices.Equal(activeGateways(got), want) || len(conflicts) != 0 {
		t.Errorf("active %v (conflicts %v), want %v", activeGateways(got), conflicts, want)
	}
	if got[1].Gateway != 1 || got[1].Name != "ams1" || got[1].Overlay != ams1.cert.Overlay {
		t.Errorf("gateway 1 as %+v", got[1])
	}
	// A gateway's goodbye removes that gateway only.
	mustOffer(t, s, p, ams1.record(t, trusttest.RecordOptions{Seq: 10, Leaving: true}))
	if got, _ := s.Active(p, time.Hour); len(got) != 1 || got[0].Node() != "ams1" {
		t.Errorf("after gateway 1's goodbye: %v", activeGateways(got))
	}
}

func isReason(err error, r trust.Reason) bool {
	var re *trust.RejectError
	return errors.As(err, &re) && re.Reason == r
}

// Active returns one Site per live (site, gateway), sorted by site and
// gateway; siblings of one site share its prefixes, another site may not
// take them.
func TestStoreActiveMultiGateway(t *testing.T) {
	ca := trusttest.NewCA(t)
	p := trusttest.Policy(t, ca, "fra1", "10.1.0.0/16")
	early := trusttest.CertOptions{NotBefore: time.Now().Add(-5 * time.Hour).Truncate(time.Second)}
	par0 := newTestSite(t, ca, "par1", early, "10.3.0.0/16")
	par2 := newTestSite(t, ca, "par1", gw(2), "10.3.0.0/16")
	ams0 := newTestSite(t, ca, "ams1", gw(0), "10.2.0.0/16")
	ams1 := newTestSite(t, ca, "ams1", gw(1), "10.2.0.0/16", "10.3.1.0/24") // also claims par1's space: par1 was first
	s := quietStore("")
	mustOffer(t, s, p,
		par2.record(t, trusttest.RecordOptions{Weight: 3}),
		ams1.record(t, trusttest.RecordOptions{Standby: true}),
		par0.record(t, trusttest.RecordOptions{Drain: true}),
		ams0.record(t, trusttest.RecordOptions{}))
	got, conflicts := s.Active(p, time.Hour)
	ov := func(ts testSite) string { return ts.cert.Overlay.String() + "/32" }
	want := []activeGateway{
		{"ams1", trusttest.WGKey("ams1"), prefixesJSON(t, "10.2.0.0/16", ov(ams0))},
		{"ams1.1", trusttest.WGKey("ams1.1"), prefixesJSON(t, "10.2.0.0/16", ov(ams1))},
		{"par1", trusttest.WGKey("par1"), prefixesJSON(t, "10.3.0.0/16", ov(par0))},
		{"par1.2", trusttest.WGKey("par1.2"), prefixesJSON(t, "10.3.0.0/16", ov(par2))},
	}
	if !slices.Equal(activeGateways(got), want) {
		t.Errorf("active:\n got %v\nwant %v", activeGateways(got), want)
	}
	wantConflicts := []trust.Conflict{{Site: "ams1", Gateway: 1, Prefix: netip.MustParsePrefix("10.3.1.0/24"), Winner: "par1", Reason: trust.ReasonOverlapSite}}
	if !slices.Equal(conflicts, wantConflicts) {
		t.Errorf("conflicts %v, want %v", conflicts, wantConflicts)
	}
	type flags struct {
		node           string
		gateway        uint8
		weight         int
		standby, drain bool
	}
	var have []flags
	for _, g := range got {
		have = append(have, flags{g.Node(), g.Gateway, g.Weight, g.Standby, g.Drain})
	}
	wantFlags := []flags{{"ams1", 0, 1, false, false}, {"ams1.1", 1, 0, true, false}, {"par1", 0, 1, false, true}, {"par1.2", 2, 3, false, false}}
	if !slices.Equal(have, wantFlags) {
		t.Errorf("flags %v, want %v", have, wantFlags)
	}
}

// Siblings (other gateways of the local site) are held, gossiped and in
// the roster, but never returned as peers — for gateway 0 and for gateway
// 1 as the local gateway.
func TestStoreSiblingsAreNoPeers(t *testing.T) {
	ca := trusttest.NewCA(t)
	gossipAddr := netip.MustParseAddrPort("192.0.2.9:7946")
	fra0 := newTestSite(t, ca, "fra1", gw(0), "10.1.0.0/16")
	fra1 := newTestSite(t, ca, "fra1", gw(1), "10.1.0.0/16")
	ams := newTestSite(t, ca, "ams1", gw(0), "10.2.0.0/16")
	for _, c := range []struct {
		local   uint8
		sibling testSite
	}{{0, fra1}, {1, fra0}} {
		p := trusttest.Policy(t, ca, "fra1", "10.1.0.0/16")
		p.LocalGateway = c.local
		s := quietStore("")
		sib := c.sibling.record(t, trusttest.RecordOptions{Gossip: gossipAddr})
		mustOffer(t, s, p, sib, ams.record(t, trusttest.RecordOptions{}))
		if got, _ := s.Active(p, time.Hour); len(got) != 1 || got[0].Node() != "ams1" {
			t.Errorf("local gateway %d: active %v, want ams1 only", c.local, activeGateways(got))
		}
		if r := s.Roster(p); r[sib.ID().String()] != gossipAddr {
			t.Errorf("local gateway %d: roster %v lacks the sibling %s", c.local, r, sib.ID())
		}
		st, err := s.State(nil)
		if err != nil {
			t.Fatal(err)
		}
		dec, err := trust.DecodeState(st)
		if err != nil || !slices.ContainsFunc(dec.Records, func(b []byte) bool { return string(b) == string(sib.Raw) }) {
			t.Errorf("local gateway %d: the sibling's record is not in the push/pull state (%v)", c.local, err)
		}
	}
}

// Two certificates with different identity keys for one (site, gateway):
// the older keeps the gateway, whichever record arrives first and whatever
// the sequence numbers; once it is revoked, the younger takes over.
func TestStoreOlderCertificateKeepsTheGateway(t *testing.T) {
	ca := trusttest.NewCA(t)
	p := trusttest.Policy(t, ca, "fra1", "10.1.0.0/16")
	now := time.Now()
	oldOpts := trusttest.CertOptions{Gateway: 1, NotBefore: now.Add(-3 * time.Hour).Truncate(time.Second)}
	newOpts := trusttest.CertOptions{Gateway: 1, NotBefore: now.Add(-2 * time.Hour).Truncate(time.Second)}
	old := newTestSite(t, ca, "ams1", oldOpts, "10.2.0.0/16")
	young := newTestSite(t, ca, "ams1", newOpts, "10.2.0.0/16")
	// Two machines: two agents, two boot ids.
	oldRec := func(seq uint64) *trust.SignedRecord {
		return old.record(t, trusttest.RecordOptions{Seq: seq, WGCurrent: trusttest.WGKey("old"), BootID: [16]byte{1}})
	}
	youngRec := func(seq uint64) *trust.SignedRecord {
		return young.record(t, trusttest.RecordOptions{Seq: seq, WGCurrent: trusttest.WGKey("young"), BootID: [16]byte{2}})
	}
	activeKey := func(s *Store) wg.PublicKey {
		got, _ := s.Active(p, time.Hour)
		if len(got) != 1 || got[0].Node() != "ams1.1" {
			t.Fatalf("active %v, want ams1.1 alone", activeGateways(got))
		}
		return got[0].PublicKey
	}

	t.Run("older first", func(t *testing.T) {
		s := quietStore("")
		mustOffer(t, s, p, oldRec(5))
		if changed, err := s.Consider(youngRec(50), p); changed || !isReason(err, trust.ReasonDuplicateGateway) {
			t.Errorf("younger certificate: changed %v, %v; want refused as %s", changed, err, trust.ReasonDuplicateGateway)
		}
		if activeKey(s) != trusttest.WGKey("old") {
			t.Error("the younger certificate took the gateway")
		}
		mustOffer(t, s, p, oldRec(6)) // the older holder's own numbers go on
	})
	t.Run("younger first", func(t *testing.T) {
		s := quietStore("")
		mustOffer(t, s, p, youngRec(50), oldRec(5))
		if activeKey(s) != trusttest.WGKey("old") {
			t.Error("the older certificate did not take the gateway back")
		}
		if changed, err := s.Consider(youngRec(51), p); changed || !isReason(err, trust.ReasonDuplicateGateway) {
			t.Errorf("younger certificate again: changed %v, %v", changed, err)
		}
	})
	t.Run("older revoked", func(t *testing.T) {
		s := quietStore("")
		mustOffer(t, s, p, oldRec(5))
		crl, err := ca.Revoke(nil, []*big.Int{old.cert.Serial}, now, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if changed, _ := s.InstallCRL(crl); !changed {
			t.Fatal("CRL not taken")
		}
		p := *p
		p.CRL = crl
		mustOffer(t, s, &p, youngRec(6))
		got, _ := s.Active(&p, time.Hour)
		if len(got) != 1 || got[0].PublicKey != trusttest.WGKey("young") {
			t.Errorf("after the revocation: %v", activeGateways(got))
		}
	})
	t.Run("the running agent renewed", func(t *testing.T) {
		// dcmesh renew: the same agent (boot id) signs with a new
		// certificate and identity key; peers take it at once.
		s := quietStore("")
		renewed := young.record(t, trusttest.RecordOptions{Seq: 6, WGCurrent: trusttest.WGKey("old"), BootID: [16]byte{1}})
		mustOffer(t, s, p, oldRec(5), renewed)
		if sr, _ := s.Record("ams1.1"); sr.Cert.Serial.Cmp(young.cert.Serial) != 0 {
			t.Error("the renewed certificate was not taken")
		}
	})
	t.Run("older record past the expiry", func(t *testing.T) {
		s := quietStore("")
		s.SetRecordExpiry(time.Hour)
		mustOffer(t, s, p, old.record(t, trusttest.RecordOptions{Seq: 5, IssuedAt: now.Add(-2 * time.Hour), BootID: [16]byte{1}}))
		if changed, err := s.Consider(youngRec(6), p); !changed || err != nil {
			t.Errorf("younger certificate after the older's record expired: %v, %v", changed, err)
		}
		s = quietStore("")
		s.SetRecordExpiry(3 * time.Hour)
		mustOffer(t, s, p, old.record(t, trusttest.RecordOptions{Seq: 5, IssuedAt: now.Add(-2 * time.Hour), BootID: [16]byte{1}}))
		if changed, err := s.Consider(youngRec(6), p); changed || !isReason(err, trust.ReasonDuplicateGateway) {
			t.Errorf("younger certificate within the expiry: %v, %v", changed, err)
		}
	})
	t.Run("older said goodbye", func(t *testing.T) {
		s := quietStore("")
		mustOffer(t, s, p, oldRec(5), old.record(t, trusttest.RecordOptions{Seq: 6, Leaving: true}), youngRec(7))
		if activeKey(s) != trusttest.WGKey("young") {
			t.Error("a goodbye kept the gateway")
		}
	})
}

// A records.json of the previous layout (highest_seq per site, no
// holder_seq) loads: gateway 0's node name is the site name, so its
// records and replay protection stay; the new layout round-trips.
func TestStoreLoadsPreviousLayout(t *testing.T) {
	ca := trusttest.NewCA(t)
	p := trusttest.Policy(t, ca, "fra1", "10.1.0.0/16")
	ams := newTestSite(t, ca, "ams1", gw(0), "10.2.0.0/16")
	amsOther := newTestSite(t, ca, "ams1", gw(0), "10.2.0.0/16") // another identity key for ams1
	ams1 := newTestSite(t, ca, "ams1", gw(1), "10.2.0.0/16")
	par := newTestSite(t, ca, "par1", gw(0), "10.3.0.0/16")
	held := ams.record(t, trusttest.RecordOptions{Seq: 7})
	old, _ := json.Marshal(map[string]any{
		"version":     1,
		"highest_seq": map[string]uint64{"ams1": 7, "par1": 4},
		"records":     [][]byte{held.Raw},
	})
	path := filepath.Join(t.TempDir(), "records.json")
	if err := os.WriteFile(path, old, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := LoadStore(path, slog.New(slog.DiscardHandler), p.CAs)
	if err != nil {
		t.Fatal(err)
	}
	if sr, ok := s.Record("ams1"); !ok || string(sr.Raw) != string(held.Raw) {
		t.Fatal("the record of the previous layout is not held under ams1")
	}
	for _, c := range []struct {
		name string
		sr   *trust.SignedRecord
		want trust.Reason // "" = taken
	}{
		{"replay of the held record's seq", ams.record(t, trusttest.RecordOptions{Seq: 7, IssuedAt: time.Now().Add(time.Second)}), trust.ReasonReplay},
		{"another holder of ams1 below the file's number", amsOther.record(t, trusttest.RecordOptions{Seq: 6}), trust.ReasonReplay},
		{"par1 below the file's number (no record held)", par.record(t, trusttest.RecordOptions{Seq: 3}), trust.ReasonReplay},
		{"ams1's next record", ams.record(t, trusttest.RecordOptions{Seq: 8}), ""},
		{"gateway 1 of ams1: a gateway of its own", ams1.record(t, trusttest.RecordOptions{Seq: 2}), ""},
	} {
		changed, err := s.Consider(c.sr, p)
		if c.want == "" && (!changed || err != nil) || c.want != "" && (changed || !isReason(err, c.want)) {
			t.Errorf("%s: changed %v, %v; want %q", c.name, changed, err, c.want)
		}
	}
	if err := s.Save(); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	var f storeFile
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	if want := map[string]uint64{"ams1": 8, "ams1.1": 2, "par1": 4}; !mapsEqual(f.HighestSeq, want) {
		t.Errorf("highest_seq %v, want %v", f.HighestSeq, want)
	}
	if f.HolderSeq[holderKey(ams1.record(t, trusttest.RecordOptions{}))] != 2 || len(f.HolderSeq) != 2 {
		t.Errorf("holder_seq %v", f.HolderSeq)
	}
	l, err := LoadStore(path, slog.New(slog.DiscardHandler), p.CAs)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := l.Names(), []string{"ams1", "ams1.1"}; !slices.Equal(got, want) {
		t.Errorf("reloaded names %v, want %v", got, want)
	}
	// The previous file's numbers survive the save, for gateways not heard
	// from since.
	if changed, err := l.Consider(par.record(t, trusttest.RecordOptions{Seq: 4}), p); changed || !isReason(err, trust.ReasonReplay) {
		t.Errorf("par1 seq 4 after the save and reload: %v, %v", changed, err)
	}
	if changed, err := l.Consider(par.record(t, trusttest.RecordOptions{Seq: 5}), p); !changed || err != nil {
		t.Errorf("par1 seq 5 after the reload: %v, %v", changed, err)
	}
	if changed, err := l.Consider(ams1.record(t, trusttest.RecordOptions{Seq: 2, IssuedAt: time.Now().Add(time.Second)}), p); changed || !isReason(err, trust.ReasonReplay) {
		t.Errorf("gateway 1 replay after the reload: %v, %v", changed, err)
	}
}

func mapsEqual(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// Acks are by node name: from a gateway the store holds, for this
// gateway's node name.
func TestStoreVerifyAckByNodeName(t *testing.T) {
	ca := trusttest.NewCA(t)
	p := trusttest.Policy(t, ca, "fra1", "10.1.0.0/16")
	ams1 := newTestSite(t, ca, "ams1", gw(1), "10.2.0.0/16")
	ams0 := newTestSite(t, ca, "ams1", gw(0), "10.2.0.0/16")
	s := quietStore("")
	mustOffer(t, s, p, ams0.record(t, trusttest.RecordOptions{}), ams1.record(t, trusttest.RecordOptions{}))
	sign := func(key ed25519.PrivateKey, from, to string) []byte {
		raw, err := trust.SignAck(trust.Ack{From: from, To: to, Key: trusttest.WGKey("next"), Stage: trust.AckPreinstalled, Seq: 3}, key)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	ack, peerKey, ok := s.VerifyAck(sign(ams1.key, "ams1.1", "fra1.1"), "fra1.1")
	if !ok || ack.From != "ams1.1" || peerKey != trusttest.WGKey("ams1.1") {
		t.Errorf("ack of ams1.1: %v %v %v", ack, peerKey, ok)
	}
	if _, _, ok := s.VerifyAck(sign(ams1.key, "ams1.1", "fra1"), "fra1.1"); ok {
		t.Error("an ack for gateway 0 of fra1 was taken by fra1.1")
	}
	if _, _, ok := s.VerifyAck(sign(ams1.key, "ams1", "fra1.1"), "fra1.1"); ok {
		t.Error("gateway 1's key signed for gateway 0 and it was taken")
	}
}
