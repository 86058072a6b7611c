package records

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/json"
	"errors"
	"log/slog"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
)

// testLogger returns a logger writing text lines to a buffer.
func testLogger() (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	return slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), &buf
}

func countLines(buf *bytes.Buffer, substr string) int {
	n := 0
	for _, l := range strings.Split(buf.String(), "\n") {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

// testSite is a certified remote site: certificate and identity key.
type testSite struct {
	cert *trust.Certificate
	key  ed25519.PrivateKey
}

func newTestSite(t *testing.T, ca *trust.CA, name string, o trusttest.CertOptions, prefixes ...string) testSite {
	t.Helper()
	c, k := trusttest.IssueWith(t, ca, name, o, prefixes...)
	return testSite{c, k}
}

func (s testSite) record(t *testing.T, o trusttest.RecordOptions) *trust.SignedRecord {
	t.Helper()
	if o.Endpoints == nil {
		o.Endpoints = []netip.AddrPort{netip.MustParseAddrPort("192.0.2.50:51820")}
	}
	return trusttest.SignedRecord(t, s.cert, s.key, o)
}

func sumRejected(s *Store) uint64 {
	var n uint64
	for _, v := range s.rejected {
		n += v
	}
	return n
}

func TestSiteStoreOffer(t *testing.T) {
	ca := trusttest.NewCA(t)
	p := trusttest.Policy(t, ca, "fra1", "10.1.0.0/16")
	ams := newTestSite(t, ca, "ams1", trusttest.CertOptions{}, "10.2.0.0/16")
	now := time.Now()
	rec := func(seq uint64, issued time.Time) *trust.SignedRecord {
		return ams.record(t, trusttest.RecordOptions{Seq: seq, IssuedAt: issued})
	}
	r5 := rec(5, now)
	r9 := rec(9, now.Add(3*time.Second))
	other := trusttest.NewCA(t)
	foreign := newTestSite(t, other, "par1", trusttest.CertOptions{}, "10.3.0.0/16")

	steps := []struct {
		name        string
		rec         *trust.SignedRecord
		changed     bool
		wantSeq     uint64 // highest["ams1"] after the step
		wantRaw     []byte // records["ams1"].Raw after the step
		wantReplays uint64
		wantTotal   uint64
	}{
		{"first record", r5, true, 5, r5.Raw, 0, 0},
		{"same bytes again", r5, false, 5, r5.Raw, 0, 0},
		{"same bytes, fresh decode", mustDecode(t, r5.Raw), false, 5, r5.Raw, 0, 0},
		{"older seq", rec(3, now.Add(time.Second)), false, 5, r5.Raw, 1, 1},
		{"equal seq, other bytes", rec(5, now.Add(2*time.Second)), false, 5, r5.Raw, 2, 2},
		{"unknown CA", foreign.record(t, trusttest.RecordOptions{Seq: 100}), false, 5, r5.Raw, 2, 3},
		{"newer seq", r9, true, 9, r9.Raw, 2, 3},
		{"older than the newest", rec(8, now.Add(4*time.Second)), false, 9, r9.Raw, 3, 4},
	}

	log, _ := testLogger()
	s := NewStore(filepath.Join(t.TempDir(), "records.json"), log)
	for _, st := range steps {
		if got := s.Offer(st.rec, p); got != st.changed {
			t.Errorf("%s: offer = %v, want %v", st.name, got, st.changed)
		}
		if s.highest["ams1"] != st.wantSeq {
			t.Errorf("%s: highest = %d, want %d", st.name, s.highest["ams1"], st.wantSeq)
		}
		if cur := s.records["ams1"]; cur == nil || !bytes.Equal(cur.Raw, st.wantRaw) {
			t.Errorf("%s: kept record is not the expected one", st.name)
		}
		if s.rejected[trust.ReasonReplay] != st.wantReplays || sumRejected(s) != st.wantTotal {
			t.Errorf("%s: rejected = %v, want %d replays, %d in all", st.name, s.rejected, st.wantReplays, st.wantTotal)
		}
	}
	if s.rejected[trust.ReasonUnknownCA] != 1 {
		t.Errorf("unknown CA not counted: %v", s.rejected)
	}
	if _, ok := s.records["par1"]; ok {
		t.Error("a record from another CA was kept")
	}
	if _, ok := s.highest["par1"]; ok {
		t.Error("a rejected record raised the highest seq")
	}
}

func mustDecode(t *testing.T, raw []byte) *trust.SignedRecord {
	t.Helper()
	sr, err := trust.DecodeRecord(raw)
	if err != nil {
		t.Fatal(err)
	}
	return sr
}

// Gossip repeats itself: a rejection is logged once per site and reason per
// logEvery, but counted every time.
func TestSiteStoreRejectLogRateLimit(t *testing.T) {
	replay := &trust.RejectError{Reason: trust.ReasonReplay, Detail: "old"}
	expired := &trust.RejectError{Reason: trust.ReasonExpired, Detail: "expired"}
	type rej struct {
		site string
		err  error
	}
	cases := []struct {
		name      string
		rejects   []rej
		age       time.Duration // age given to the first log entry before the last reject
		wantLines int
	}{
		{"one", []rej{{"ams1", replay}}, 0, 1},
		{"repeated", []rej{{"ams1", replay}, {"ams1", replay}, {"ams1", replay}}, 0, 1},
		{"other site", []rej{{"ams1", replay}, {"par1", replay}, {"ams1", replay}}, 0, 2},
		{"other reason", []rej{{"ams1", replay}, {"ams1", expired}, {"ams1", expired}}, 0, 2},
		{"plain error is decode", []rej{{"ams1", errors.New("garbage")}, {"ams1", errors.New("more garbage")}}, 0, 1},
		{"within logEvery", []rej{{"ams1", replay}, {"ams1", replay}}, logEvery - time.Minute, 1},
		{"after logEvery", []rej{{"ams1", replay}, {"ams1", replay}}, logEvery + time.Second, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			log, buf := testLogger()
			s := NewStore("", log)
			for i, r := range c.rejects {
				if i == len(c.rejects)-1 && c.age != 0 {
					for k := range s.logged {
						s.logged[k] = time.Now().Add(-c.age)
					}
				}
				s.Reject(r.site, r.err)
			}
			if got := countLines(buf, "site record rejected"); got != c.wantLines {
				t.Errorf("%d log lines, want %d:\n%s", got, c.wantLines, buf)
			}
			if got := sumRejected(s); got != uint64(len(c.rejects)) {
				t.Errorf("counted %d rejections, want %d", got, len(c.rejects))
			}
		})
	}
	t.Run("reason label", func(t *testing.T) {
		log, buf := testLogger()
		s := NewStore("", log)
		s.Reject("ams1", errors.New("x"))
		if s.rejected[trust.ReasonDecode] != 1 || !strings.Contains(buf.String(), "reason=decode") || !strings.Contains(buf.String(), "site=ams1") {
			t.Errorf("rejected=%v log=%s", s.rejected, buf)
		}
	})
}

func TestSiteStoreSaveLoad(t *testing.T) {
	ca := trusttest.NewCA(t)
	p := trusttest.Policy(t, ca, "fra1", "10.1.0.0/16")
	ams := newTestSite(t, ca, "ams1", trusttest.CertOptions{}, "10.2.0.0/16")
	par := newTestSite(t, ca, "par1", trusttest.CertOptions{}, "10.3.0.0/16")
	gone := newTestSite(t, ca, "lon1", trusttest.CertOptions{}, "10.4.0.0/16")
	crl, err := ca.Revoke(nil, []*big.Int{gone.cert.Serial}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	path := filepath.Join(t.TempDir(), "records.json")
	log, _ := testLogger()
	s := NewStore(path, log)
	for _, sr := range []*trust.SignedRecord{
		ams.record(t, trusttest.RecordOptions{Seq: 7}),
		par.record(t, trusttest.RecordOptions{Seq: 1 << 40}),
		gone.record(t, trusttest.RecordOptions{Seq: 3}),
	} {
		if !s.Offer(sr, p) {
			t.Fatalf("%s not accepted", sr.Site)
		}
	}
	if !s.setCRL(crl) {
		t.Fatal("CRL not taken")
	}
	if err := s.Save(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("store mode %04o, want 0600", st.Mode().Perm())
	}

	l, err := LoadStore(path, log, []*x509.Certificate{ca.Cert})
	if err != nil {
		t.Fatal(err)
	}
	if l.path != path {
		t.Errorf("path %q", l.path)
	}
	if got, want := l.Names(), []string{"ams1", "par1"}; !slices.Equal(got, want) {
		t.Errorf("records for %v, want %v", got, want)
	}
	for name, sr := range s.records {
		if !bytes.Equal(l.records[name].Raw, sr.Raw) || l.records[name].Seq != sr.Seq {
			t.Errorf("record of %s changed in the round trip", name)
		}
	}
	// The revoked site's record is gone but its replay protection is not.
	wantHighest := map[string]uint64{"ams1": 7, "par1": 1 << 40, "lon1": 3}
	if len(l.highest) != len(wantHighest) {
		t.Errorf("highest = %v, want %v", l.highest, wantHighest)
	}
	for site, seq := range wantHighest {
		if l.highest[site] != seq {
			t.Errorf("highest[%s] = %d, want %d", site, l.highest[site], seq)
		}
	}
	if l.crl == nil || !bytes.Equal(l.crl.Raw, crl.Raw) || l.crl.Number.Cmp(crl.Number) != 0 {
		t.Errorf("CRL not restored: %+v", l.crl)
	}
	// The restored store still refuses a replay.
	if l.Offer(ams.record(t, trusttest.RecordOptions{Seq: 7, IssuedAt: time.Now().Add(time.Second)}), p) {
		t.Error("a replay was accepted after the reload")
	}
	if l.rejected[trust.ReasonReplay] != 1 {
		t.Errorf("rejected = %v", l.rejected)
	}
	// The maps of a loaded store are usable (no nil map panics).
	l.Reject("x", errors.New("y"))
}

func TestLoadSiteStoreMissingIsEmpty(t *testing.T) {
	log, _ := testLogger()
	s, err := LoadStore(filepath.Join(t.TempDir(), "none.json"), log, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.records) != 0 || len(s.highest) != 0 || s.crl != nil {
		t.Errorf("not empty: %+v", s)
	}
}

// A corrupt store is fatal: it carries the replay protection. (A valid list
// of a CA no longer pinned is not corruption: TestLoadSiteStoreDropsListOfUnpinnedCA.)
func TestLoadSiteStoreCorrupt(t *testing.T) {
	ca := trusttest.NewCA(t)
	enc := func(f storeFile) string {
		b, err := json.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	cases := []struct {
		name, content string
	}{
		{"garbage", "this is not json"},
		{"truncated", `{"version":1,"highest_seq":{"ams1":`},
		{"empty", ""},
		{"wrong version", `{"version":2,"highest_seq":{},"records":[]}`},
		{"no version", `{"highest_seq":{"ams1":3}}`},
		{"wrong type", `{"version":1,"highest_seq":{"ams1":"three"}}`},
		{"undecodable record", enc(storeFile{Version: 1, Records: [][]byte{{0, 1, 2}}})},
		{"CRL garbage", enc(storeFile{Version: 1, CRL: []byte("nope")})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "records.json")
			if err := os.WriteFile(path, []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
			log, _ := testLogger()
			s, err := LoadStore(path, log, []*x509.Certificate{ca.Cert})
			if err == nil {
				t.Fatalf("accepted: %+v", s)
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "move it away") {
				t.Errorf("error does not name the file and say to move it away: %v", err)
			}
		})
	}
}

// The wrong-version error says "corrupt (<nil>)": the %v of a nil JSON error.
func TestLoadSiteStoreWrongVersionMessage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "records.json")
	if err := os.WriteFile(path, []byte(`{"version":2}`), 0o600); err != nil {
		t.Fatal(err)
	}
	log, _ := testLogger()
	_, err := LoadStore(path, log, nil)
	if err == nil || strings.Contains(err.Error(), "<nil>") || !strings.Contains(err.Error(), "version") {
		t.Errorf("error: %v", err)
	}
}

func TestSiteStoreSetCRL(t *testing.T) {
	ca := trusttest.NewCA(t)
	p := trusttest.Policy(t, ca, "fra1", "10.1.0.0/16")
	a := newTestSite(t, ca, "ams1", trusttest.CertOptions{}, "10.2.0.0/16")
	b := newTestSite(t, ca, "par1", trusttest.CertOptions{}, "10.3.0.0/16")
	c := newTestSite(t, ca, "lon1", trusttest.CertOptions{}, "10.4.0.0/16")
	now := time.Now()
	revoke := func(prev *trust.RevocationList, serials ...*big.Int) *trust.RevocationList {
		l, err := ca.Revoke(prev, serials, now, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	crl1 := revoke(nil, a.cert.Serial)     // number 1: ams1
	crl2 := revoke(crl1, b.cert.Serial)    // number 2: ams1, par1
	crlOther := revoke(nil, c.cert.Serial) // number 1 again: lon1

	log, buf := testLogger()
	s := NewStore("", log)
	for _, st := range []testSite{a, b, c} {
		if !s.Offer(st.record(t, trusttest.RecordOptions{Seq: 10}), p) {
			t.Fatal("not accepted")
		}
	}
	steps := []struct {
		name      string
		crl       *trust.RevocationList
		changed   bool
		wantSites []string
		wantNum   int64
	}{
		{"first list", crl1, true, []string{"lon1", "par1"}, 1},
		{"same list again", crl1, false, []string{"lon1", "par1"}, 1},
		{"equal number, other content", crlOther, false, []string{"lon1", "par1"}, 1},
		{"newer list", crl2, true, []string{"lon1"}, 2},
		{"older list", crl1, false, []string{"lon1"}, 2},
		{"older list revoking a kept site", crlOther, false, []string{"lon1"}, 2},
	}
	for _, st := range steps {
		if got := s.setCRL(st.crl); got != st.changed {
			t.Errorf("%s: setCRL = %v, want %v", st.name, got, st.changed)
		}
		if got := s.Names(); !slices.Equal(got, st.wantSites) {
			t.Errorf("%s: sites %v, want %v", st.name, got, st.wantSites)
		}
		if s.crl.Number.Int64() != st.wantNum {
			t.Errorf("%s: CRL number %v, want %d", st.name, s.crl.Number, st.wantNum)
		}
	}
	// Replay protection survives the removal.
	if s.highest["ams1"] != 10 || s.highest["par1"] != 10 {
		t.Errorf("highest = %v", s.highest)
	}
	if n := countLines(buf, "revoked"); n != 2 {
		t.Errorf("%d revocation log lines, want 2:\n%s", n, buf)
	}
}

func TestSiteStoreActive(t *testing.T) {
	ca := trusttest.NewCA(t)
	now := time.Now()
	hour := time.Hour
	ep := netip.MustParseAddrPort("192.0.2.7:51820")
	ov := func(s string) trusttest.CertOptions { return trusttest.CertOptions{Overlay: netip.MustParseAddr(s)} }
	older := func(s string) trusttest.CertOptions {
		o := ov(s)
		o.NotBefore = now.Add(-3 * hour).Truncate(time.Second)
		return o
	}
	younger := func(s string) trusttest.CertOptions {
		o := ov(s)
		o.NotBefore = now.Add(-2 * hour).Truncate(time.Second)
		return o
	}
	expired := ov("10.255.0.9")
	expired.NotBefore = now.Add(-20 * hour).Truncate(time.Second)
	expired.NotAfter = now.Add(-10 * hour).Truncate(time.Second)

	ams := newTestSite(t, ca, "ams1", ov("10.255.0.2"), "10.2.0.0/16", "10.12.0.0/16")
	par := newTestSite(t, ca, "par1", ov("10.255.0.3"), "10.3.0.0/16")
	old := newTestSite(t, ca, "zzz-old", older("10.255.0.4"), "10.4.0.0/16")
	young := newTestSite(t, ca, "aaa-young", younger("10.255.0.5"), "10.4.128.0/17", "10.5.0.0/16")
	exp := newTestSite(t, ca, "exp1", expired, "10.9.0.0/16")
	revoked := newTestSite(t, ca, "rev1", ov("10.255.0.8"), "10.8.0.0/16")
	crl, err := ca.Revoke(nil, []*big.Int{revoked.cert.Serial}, now, hour)
	if err != nil {
		t.Fatal(err)
	}
	pfx := func(ss ...string) []netip.Prefix { return trusttest.Prefixes(t, ss...) }
	rec := func(s testSite, o trusttest.RecordOptions) *trust.SignedRecord {
		if o.Endpoints == nil {
			o.Endpoints = []netip.AddrPort{ep}
		}
		return trusttest.SignedRecord(t, s.cert, s.key, o)
	}

	cases := []struct {
		name          string
		records       []*trust.SignedRecord
		crl           *trust.RevocationList
		want          []Site
		wantConflicts []trust.Conflict
	}{
		{
			name:    "overlay added as host prefix",
			records: []*trust.SignedRecord{rec(ams, trusttest.RecordOptions{})},
			want:    []Site{{Name: "ams1", PublicKey: trusttest.WGKey("ams1"), Endpoint: ep, Prefixes: pfx("10.2.0.0/16", "10.12.0.0/16", "10.255.0.2/32")}},
		},
		{
			name:    "announced subset",
			records: []*trust.SignedRecord{rec(ams, trusttest.RecordOptions{Prefixes: pfx("10.2.1.0/24")})},
			want:    []Site{{Name: "ams1", PublicKey: trusttest.WGKey("ams1"), Endpoint: ep, Prefixes: pfx("10.2.1.0/24", "10.255.0.2/32")}},
		},
		{
			name: "sorted by name, first endpoint",
			records: []*trust.SignedRecord{
				rec(par, trusttest.RecordOptions{Endpoints: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.3:1"), ep}}),
				rec(ams, trusttest.RecordOptions{}),
			},
			want: []Site{
				{Name: "ams1", PublicKey: trusttest.WGKey("ams1"), Endpoint: ep, Prefixes: pfx("10.2.0.0/16", "10.12.0.0/16", "10.255.0.2/32")},
				{Name: "par1", PublicKey: trusttest.WGKey("par1"), Endpoint: netip.MustParseAddrPort("192.0.2.3:1"), Prefixes: pfx("10.3.0.0/16", "10.255.0.3/32")},
			},
		},
		{
			name:    "leaving",
			records: []*trust.SignedRecord{rec(ams, trusttest.RecordOptions{Leaving: true}), rec(par, trusttest.RecordOptions{})},
			want:    []Site{{Name: "par1", PublicKey: trusttest.WGKey("par1"), Endpoint: ep, Prefixes: pfx("10.3.0.0/16", "10.255.0.3/32")}},
		},
		{
			name: "record older than the expiry",
			records: []*trust.SignedRecord{
				rec(ams, trusttest.RecordOptions{IssuedAt: now.Add(-2 * hour)}),
				rec(par, trusttest.RecordOptions{IssuedAt: now.Add(-50 * time.Minute)}),
			},
			want: []Site{{Name: "par1", PublicKey: trusttest.WGKey("par1"), Endpoint: ep, Prefixes: pfx("10.3.0.0/16", "10.255.0.3/32")}},
		},
		{
			name:    "expired certificate",
			records: []*trust.SignedRecord{rec(exp, trusttest.RecordOptions{})},
		},
		{
			name:    "revoked certificate",
			records: []*trust.SignedRecord{rec(revoked, trusttest.RecordOptions{}), rec(par, trusttest.RecordOptions{})},
			crl:     crl,
			want:    []Site{{Name: "par1", PublicKey: trusttest.WGKey("par1"), Endpoint: ep, Prefixes: pfx("10.3.0.0/16", "10.255.0.3/32")}},
		},
		{
			name:    "no endpoint",
			records: []*trust.SignedRecord{rec(ams, trusttest.RecordOptions{Endpoints: []netip.AddrPort{}})},
		},
		{
			name:    "overlap: older certificate wins",
			records: []*trust.SignedRecord{rec(young, trusttest.RecordOptions{}), rec(old, trusttest.RecordOptions{})},
			want: []Site{
				{Name: "aaa-young", PublicKey: trusttest.WGKey("aaa-young"), Endpoint: ep, Prefixes: pfx("10.5.0.0/16", "10.255.0.5/32")},
				{Name: "zzz-old", PublicKey: trusttest.WGKey("zzz-old"), Endpoint: ep, Prefixes: pfx("10.4.0.0/16", "10.255.0.4/32")},
			},
			wantConflicts: []trust.Conflict{{Site: "aaa-young", Prefix: netip.MustParsePrefix("10.4.128.0/17"), Winner: "zzz-old", Reason: trust.ReasonOverlapSite}},
		},
		{
			name:    "overlap: other insertion order",
			records: []*trust.SignedRecord{rec(old, trusttest.RecordOptions{}), rec(young, trusttest.RecordOptions{})},
			want: []Site{
				{Name: "aaa-young", PublicKey: trusttest.WGKey("aaa-young"), Endpoint: ep, Prefixes: pfx("10.5.0.0/16", "10.255.0.5/32")},
				{Name: "zzz-old", PublicKey: trusttest.WGKey("zzz-old"), Endpoint: ep, Prefixes: pfx("10.4.0.0/16", "10.255.0.4/32")},
			},
			wantConflicts: []trust.Conflict{{Site: "aaa-young", Prefix: netip.MustParsePrefix("10.4.128.0/17"), Winner: "zzz-old", Reason: trust.ReasonOverlapSite}},
		},
		{
			name: "duplicate WireGuard key: younger site dropped",
			records: []*trust.SignedRecord{
				rec(young, trusttest.RecordOptions{WGCurrent: trusttest.WGKey("shared")}),
				rec(old, trusttest.RecordOptions{WGCurrent: trusttest.WGKey("shared")}),
			},
			want:          []Site{{Name: "zzz-old", PublicKey: trusttest.WGKey("shared"), Endpoint: ep, Prefixes: pfx("10.4.0.0/16", "10.255.0.4/32")}},
			wantConflicts: []trust.Conflict{{Site: "aaa-young", Winner: "zzz-old", Reason: trust.ReasonDuplicateKey}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			log, _ := testLogger()
			s := NewStore("", log)
			for _, sr := range c.records {
				s.records[sr.Site] = sr
				s.highest[sr.Site] = sr.Seq
			}
			p := trusttest.Policy(t, ca, "fra1", "10.1.0.0/16")
			p.CRL = c.crl
			got, conflicts := s.Active(p, hour)
			for i := range got {
				got[i].Seq = 0 // compared elsewhere; the cases are about which sites and prefixes
			}
			if !sameSites(got, c.want) {
				t.Errorf("active:\n got %v\nwant %v", got, c.want)
			}
			if !slices.Equal(conflicts, c.wantConflicts) {
				t.Errorf("conflicts:\n got %v\nwant %v", conflicts, c.wantConflicts)
			}
			// active must not modify the stored records.
			for _, sr := range c.records {
				for _, pf := range s.records[sr.Site].Prefixes {
					if pf.Bits() == 32 && pf.Addr() == sr.Cert.Overlay {
						t.Errorf("%s: active added the overlay to the stored record", sr.Site)
					}
				}
			}
		})
	}
}

func sameSites(a, b []Site) bool {
	return slices.EqualFunc(a, b, func(x, y Site) bool {
		return x.Name == y.Name && x.PublicKey == y.PublicKey && x.Endpoint == y.Endpoint && slices.Equal(x.Prefixes, y.Prefixes)
	})
}

func TestSiteStoreState(t *testing.T) {
	ca := trusttest.NewCA(t)
	p := trusttest.Policy(t, ca, "fra1", "10.1.0.0/16")
	own := newTestSite(t, ca, "fra1", trusttest.CertOptions{}, "10.1.0.0/16")
	ams := newTestSite(t, ca, "ams1", trusttest.CertOptions{}, "10.2.0.0/16")
	par := newTestSite(t, ca, "par1", trusttest.CertOptions{}, "10.3.0.0/16")
	crl, err := ca.Revoke(nil, []*big.Int{big.NewInt(99)}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ownRec := own.record(t, trusttest.RecordOptions{Seq: 4})
	parRec := par.record(t, trusttest.RecordOptions{Seq: 2})
	amsRec := ams.record(t, trusttest.RecordOptions{Seq: 3})

	cases := []struct {
		name     string
		own      *trust.SignedRecord
		records  []*trust.SignedRecord
		crl      *trust.RevocationList
		wantRecs [][]byte
		wantCRLs [][]byte
	}{
		{"empty", nil, nil, nil, nil, nil},
		{"own only", ownRec, nil, nil, [][]byte{ownRec.Raw}, nil},
		{"own first, then by name, and the CRL", ownRec, []*trust.SignedRecord{parRec, amsRec}, crl,
			[][]byte{ownRec.Raw, amsRec.Raw, parRec.Raw}, [][]byte{crl.Raw}},
		{"no own record", nil, []*trust.SignedRecord{parRec, amsRec}, crl, [][]byte{amsRec.Raw, parRec.Raw}, [][]byte{crl.Raw}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			log, _ := testLogger()
			s := NewStore("", log)
			for _, sr := range c.records {
				if !s.Offer(sr, p) {
					t.Fatalf("%s not accepted", sr.Site)
				}
			}
			if c.crl != nil {
				s.setCRL(c.crl)
			}
			b, err := s.State(c.own)
			if err != nil {
				t.Fatal(err)
			}
			st, err := trust.DecodeState(b)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(st.Records, c.wantRecs, bytes.Equal) {
				t.Errorf("records: got %d, want %d (or wrong order)", len(st.Records), len(c.wantRecs))
			}
			if !slices.EqualFunc(st.CRLs, c.wantCRLs, bytes.Equal) {
				t.Errorf("CRLs: got %d, want %d", len(st.CRLs), len(c.wantCRLs))
			}
			for _, raw := range st.Records {
				if _, err := trust.DecodeRecord(raw); err != nil {
					t.Errorf("state holds an undecodable record: %v", err)
				}
			}
		})
	}
}

// holds recognises exactly the records held, so gossip's repeats skip the
// signature checks, and nothing else: not a replaced record, not a record
// with one byte changed.
func TestSiteStoreHolds(t *testing.T) {
	ca := trusttest.NewCA(t)
	p := trusttest.Policy(t, ca, "fra1", "10.1.0.0/16")
	s := NewStore(filepath.Join(t.TempDir(), "sites.json"), slog.New(slog.DiscardHandler))
	ams := newTestSite(t, ca, "ams1", trusttest.CertOptions{}, "10.2.0.0/16")
	r1 := ams.record(t, trusttest.RecordOptions{Seq: 1})
	r2 := ams.record(t, trusttest.RecordOptions{Seq: 2})
	if s.Holds(r1.Raw) {
		t.Fatal("empty store holds a record")
	}
	if !s.Offer(r1, p) || !s.Holds(r1.Raw) {
		t.Fatal("accepted record not held")
	}
	flipped := slices.Clone(r1.Raw)
	flipped[len(flipped)-1] ^= 1
	if s.Holds(flipped) {
		t.Error("a record with one byte changed counts as held")
	}
	if !s.Offer(r2, p) || !s.Holds(r2.Raw) || s.Holds(r1.Raw) {
		t.Errorf("after seq 2: holds(r2)=%v holds(r1)=%v, want true false", s.Holds(r2.Raw), s.Holds(r1.Raw))
	}
	for i := range 200 { // the index is swept, not grown without bound
		r := ams.record(t, trusttest.RecordOptions{Seq: uint64(3 + i)})
		if !s.Offer(r, p) {
			t.Fatalf("seq %d refused", 3+i)
		}
	}
	if len(s.held) > 2*len(s.records)+65 {
		t.Errorf("index holds %d entries for %d records", len(s.held), len(s.records))
	}
}

// Active carries each record's weight, standby and drain flags: the data
// plane builds nexthop-group membership from them.
func TestSiteStoreActiveWeights(t *testing.T) {
	ca := trusttest.NewCA(t)
	ams := newTestSite(t, ca, "ams1", trusttest.CertOptions{}, "10.2.0.0/16")
	par := newTestSite(t, ca, "par1", trusttest.CertOptions{}, "10.3.0.0/16")
	lon := newTestSite(t, ca, "lon1", trusttest.CertOptions{}, "10.4.0.0/16")
	s := NewStore("", slog.New(slog.DiscardHandler))
	for _, sr := range []*trust.SignedRecord{
		ams.record(t, trusttest.RecordOptions{}),
		par.record(t, trusttest.RecordOptions{Weight: 7, Drain: true}),
		lon.record(t, trusttest.RecordOptions{Standby: true}),
	} {
		s.records[sr.Site] = sr
	}
	got, _ := s.Active(trusttest.Policy(t, ca, "fra1", "10.1.0.0/16"), time.Hour)
	type flags struct {
		name           string
		weight         int
		standby, drain bool
	}
	var have []flags
	for _, g := range got {
		have = append(have, flags{g.Name, g.Weight, g.Standby, g.Drain})
	}
	want := []flags{{"ams1", 1, false, false}, {"lon1", 0, true, false}, {"par1", 7, false, true}}
	if !slices.Equal(have, want) {
		t.Errorf("weights: got %v, want %v", have, want)
	}
}
