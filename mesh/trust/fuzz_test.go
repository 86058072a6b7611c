package trust_test

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"math/big"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
)

// addMutations seeds f with b, some truncations and some bit flips of b.
func addMutations(f *testing.F, b []byte) {
	f.Add(b)
	for _, n := range []int{0, 1, 2, 4, len(b) / 3, len(b) / 2, len(b) - 65, len(b) - 1} {
		if n >= 0 && n < len(b) {
			f.Add(b[:n])
		}
	}
	for _, i := range []int{0, 1, 3, 7, len(b) / 4, len(b) / 2, len(b) - 70, len(b) - 1} {
		if i >= 0 && i < len(b) {
			m := bytes.Clone(b)
			m[i] ^= 0x04
			f.Add(m)
		}
	}
	f.Add(append(bytes.Clone(b), 0))
}

// fuzzIssued returns certificates and records signed by a fixed CA.
func fuzzIssued(f *testing.F) (*trust.CA, []*trust.Certificate, []*trust.SignedRecord) {
	ca := fixedCA(f, 1)
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c1, k1 := trusttest.IssueWith(f, ca, "fra1", trusttest.CertOptions{NotBefore: nb}, "10.1.0.0/16", "fd00:1::/48")
	c2, k2 := trusttest.IssueWith(f, ca, "ams2", trusttest.CertOptions{
		NotBefore: nb, AllowDefault: true, Overlay: netip.MustParseAddr("fd00:dc::2"),
		Underlay: trusttest.Prefixes(f, "198.51.100.0/24", "2001:db8::/32"),
	}, "10.2.0.0/16")
	r1 := trusttest.SignedRecord(f, c1, k1, trusttest.RecordOptions{Seq: 7, IssuedAt: nb})
	r2 := trusttest.SignedRecord(f, c2, k2, trusttest.RecordOptions{
		Seq: 1767225600000, IssuedAt: nb, WGNext: trusttest.WGKey("n"), Phase: trust.PhaseSwitched,
		Prefixes:  pfxs("0.0.0.0/0", "10.2.3.0/24"),
		Endpoints: []netip.AddrPort{ap("198.51.100.1:51820"), ap("[2001:db8::1]:443")},
	})
	r3 := trusttest.SignedRecord(f, c1, k1, trusttest.RecordOptions{Seq: 8, IssuedAt: nb, Leaving: true, Prefixes: []netip.Prefix{}})
	// Gateways 1 and 3 of fra1: the same prefixes, a standby and a
	// draining one.
	g1, gk1 := trusttest.IssueWith(f, ca, "fra1", trusttest.CertOptions{NotBefore: nb, Gateway: 1}, "10.1.0.0/16", "fd00:1::/48")
	g3, gk3 := trusttest.IssueWith(f, ca, "fra1", trusttest.CertOptions{NotBefore: nb, Gateway: 3}, "10.1.0.0/16")
	r4 := trusttest.SignedRecord(f, g1, gk1, trusttest.RecordOptions{Seq: 9, IssuedAt: nb, Standby: true, PSKSites: []string{"ams2", "fra1.3"}})
	r5 := trusttest.SignedRecord(f, g3, gk3, trusttest.RecordOptions{Seq: 10, IssuedAt: nb, Weight: 200, Drain: true})
	return ca, []*trust.Certificate{c1, c2, g1, g3}, []*trust.SignedRecord{r1, r2, r3, r4, r5}
}

func sameCert(a, b *trust.Certificate) bool {
	return bytes.Equal(a.Raw, b.Raw) && a.Site == b.Site && a.Gateway == b.Gateway && a.IdentityKey.Equal(b.IdentityKey) &&
		reflect.DeepEqual(a.Prefixes, b.Prefixes) && a.Overlay == b.Overlay &&
		reflect.DeepEqual(a.Underlay, b.Underlay) && a.AllowDefault == b.AllowDefault &&
		a.Serial.Cmp(b.Serial) == 0 && a.NotBefore.Equal(b.NotBefore) && a.NotAfter.Equal(b.NotAfter)
}

func FuzzParseCertificate(f *testing.F) {
	ca, certs, _ := fuzzIssued(f)
	for _, c := range certs {
		addMutations(f, c.Raw)
	}
	f.Add(ca.Cert.Raw)
	f.Fuzz(func(t *testing.T, der []byte) {
		c, err := trust.ParseCertificate(der)
		if err != nil {
			return
		}
		if !bytes.Equal(c.Raw, der) {
			t.Fatal("Raw is not the input")
		}
		if !trust.ValidSiteName(c.Site) || c.Gateway >= trust.MaxGateways || len(c.Prefixes) == 0 || len(c.Prefixes) > trust.MaxPrefixes || !c.Overlay.IsValid() {
			t.Fatalf("invariant broken: %+v", c)
		}
		for _, p := range append(c.Prefixes, c.Underlay...) {
			if p != p.Masked() {
				t.Fatalf("non-canonical prefix %v", p)
			}
		}
		again, err := trust.ParseCertificate(c.Raw)
		if err != nil || !sameCert(c, again) {
			t.Fatalf("re-parse: %v", err)
		}
		// Verifying must not panic either.
		c.Verify([]*x509.Certificate{ca.Cert}, nil, time.Now(), time.Minute)
	})
}

func FuzzDecodeRecord(f *testing.F) {
	ca, _, records := fuzzIssued(f)
	for _, r := range records {
		addMutations(f, r.Raw)
	}
	policy := &trust.Policy{
		CAs: []*x509.Certificate{ca.Cert}, LocalSite: "local", LocalPrefixes: pfxs("10.0.0.0/16"),
		Underlay: pfxs("192.0.2.0/24"), Now: time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC), Skew: time.Minute,
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		sr, err := trust.DecodeRecord(b)
		if err != nil {
			var re *trust.RejectError
			if !errors.As(err, &re) || (re.Reason != trust.ReasonDecode && re.Reason != trust.ReasonSignature) {
				t.Fatalf("error %v is not a decode/signature rejection", err)
			}
			return
		}
		if !bytes.Equal(sr.Raw, b) {
			t.Fatal("Raw is not the input")
		}
		body, sig, err := trust.SplitEnvelope(b)
		if err != nil {
			t.Fatal(err)
		}
		if env, _ := asn1.Marshal(struct{ B, S []byte }{body, sig}); !bytes.Equal(env, b) {
			t.Fatal("envelope is not canonical")
		}
		again, err := trust.EncodeBody(&sr.Record)
		if err != nil || !bytes.Equal(again, body) {
			t.Fatalf("re-encoding differs: %v", err)
		}
		sr2, err := trust.DecodeRecord(sr.Raw)
		if err != nil || !sameCert(sr.Cert, sr2.Cert) {
			t.Fatalf("re-decode: %v", err)
		}
		sr2.Cert = sr.Cert
		if !reflect.DeepEqual(sr2.Record, sr.Record) {
			t.Fatal("re-decode differs")
		}
		if sr.Standby != (sr.Weight == 0) {
			t.Fatalf("weight %d with standby %v", sr.Weight, sr.Standby)
		}
		// The rest of the pipeline must not panic on whatever decodes.
		policy.CheckRecord(sr, sr.ID().String(), 0)
		trust.ResolveGateways([]*trust.SignedRecord{sr, sr2})
		trust.Resolve([]*trust.SignedRecord{sr, sr2})
	})
}

func FuzzDecodeState(f *testing.F) {
	ca, _, records := fuzzIssued(f)
	crl, err := ca.Revoke(nil, []*big.Int{big.NewInt(5)}, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []trust.State{
		{},
		{Records: [][]byte{records[0].Raw}},
		{Records: [][]byte{records[0].Raw, records[1].Raw, records[2].Raw}, CRLs: [][]byte{crl.Raw}},
		{Records: [][]byte{{1}, {2, 3}}, CRLs: [][]byte{{4}}},
	} {
		b, err := trust.EncodeState(s)
		if err != nil {
			f.Fatal(err)
		}
		addMutations(f, b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := trust.DecodeState(b)
		if err != nil {
			return
		}
		again, err := trust.EncodeState(s)
		if err != nil {
			t.Fatalf("decoded state does not encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatal("re-encoding differs from the input")
		}
	})
}

func FuzzParseRevocationList(f *testing.F) {
	ca := fixedCA(f, 1)
	other := fixedCA(f, 2)
	cas := []*x509.Certificate{ca.Cert}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var prev *trust.RevocationList
	for i, serials := range [][]*big.Int{nil, {big.NewInt(1)}, {big.NewInt(7), new(big.Int).Lsh(big.NewInt(1), 127)}} {
		l, err := ca.Revoke(prev, serials, now.Add(time.Duration(i)*time.Hour), 24*time.Hour)
		if err != nil {
			f.Fatal(err)
		}
		addMutations(f, l.Raw)
		prev = l
	}
	foreign, err := other.Revoke(nil, []*big.Int{big.NewInt(1)}, now, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(foreign.Raw)
	f.Fuzz(func(t *testing.T, der []byte) {
		l, err := trust.ParseRevocationList(der, cas)
		if err != nil {
			return
		}
		if !bytes.Equal(l.Raw, der) {
			t.Fatal("Raw is not the input")
		}
		again, err := trust.ParseRevocationList(l.Raw, cas)
		if err != nil || again.Number.Cmp(l.Number) != 0 || len(again.Serials) != len(l.Serials) {
			t.Fatalf("re-parse: %v", err)
		}
		for _, s := range l.Serials {
			if !again.Revoked(s) {
				t.Fatalf("serial %v lost", s)
			}
		}
	})
}

// FuzzRecordFields drives the encoder: whatever SignRecord accepts must
// decode to the same record.
func FuzzRecordFields(f *testing.F) {
	ca := fixedCA(f, 1)
	cert, key := trusttest.IssueWith(f, ca, "fra1", trusttest.CertOptions{NotBefore: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}, "10.1.0.0/16")
	f.Add("fra1", uint64(1), int64(0), []byte{10, 1, 0, 0, 16}, []byte{198, 51, 100, 1, 0xca, 0x6c}, byte(0), false, []byte{1}, byte(0), false, false)
	f.Add("fra1", uint64(1<<63), int64(-1), []byte{}, []byte{}, byte(1), true, []byte{}, byte(1), false, true)
	f.Add("Fra1", uint64(5), int64(1<<62), make([]byte, 17), make([]byte, 18), byte(2), false, []byte{2, 3}, byte(255), true, false)
	f.Add("fra1", uint64(9), int64(7), []byte{}, []byte{}, byte(0), false, []byte{4}, byte(0), true, true)
	f.Fuzz(func(t *testing.T, site string, seq uint64, issued int64, prefixes, endpoints []byte, phase byte, leaving bool, keys []byte,
		weight byte, standby, drain bool) {
		r := trust.Record{
			Site: site, Seq: seq, IssuedAt: time.UnixMilli(issued).UTC(), Phase: trust.Phase(phase), Leaving: leaving, Cert: cert,
			Weight: weight, Standby: standby, Drain: drain,
		}
		if len(keys) > 0 {
			r.WGCurrent = trusttest.WGKey(string(keys[:1]))
		}
		if len(keys) > 1 {
			r.WGNext = trusttest.WGKey(string(keys[1:]))
		}
		// prefixes: (4 or 16 address bytes chosen by the first byte's low bit, then a length byte)*
		for len(prefixes) > 0 {
			n := 5
			if prefixes[0]&1 == 1 {
				n = 17
			}
			if len(prefixes) < n {
				break
			}
			a, _ := netip.AddrFromSlice(prefixes[:n-1])
			r.Prefixes = append(r.Prefixes, netip.PrefixFrom(a, int(prefixes[n-1])))
			prefixes = prefixes[n:]
		}
		for len(endpoints) >= 6 {
			a, _ := netip.AddrFromSlice(endpoints[:4])
			r.Endpoints = append(r.Endpoints, netip.AddrPortFrom(a, uint16(endpoints[4])<<8|uint16(endpoints[5])))
			endpoints = endpoints[6:]
		}
		sr, err := trust.SignRecord(r, key)
		if err != nil {
			return
		}
		got, err := trust.DecodeRecord(sr.Raw)
		if err != nil {
			t.Fatalf("signed record does not decode: %v", err)
		}
		if !got.IssuedAt.Equal(r.IssuedAt) {
			t.Fatalf("IssuedAt %v, want %v", got.IssuedAt, r.IssuedAt)
		}
		got.IssuedAt = r.IssuedAt
		if len(r.Prefixes) == 0 {
			r.Prefixes, got.Prefixes = nil, nil
		}
		if len(r.Endpoints) == 0 {
			r.Endpoints, got.Endpoints = nil, nil
		}
		if r.Weight == 0 && !r.Standby {
			r.Weight = 1 // the default weight
		}
		if !reflect.DeepEqual(got.Record, r) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got.Record, r)
		}
	})
}
