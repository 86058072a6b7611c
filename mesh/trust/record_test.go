package trust_test

import (
	"bytes"
	"crypto/mlkem"
	"crypto/x509"
	"encoding/asn1"
	"math"
	"net/netip"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/trust"
	"github.com/dcmesh/dcmesh/mesh/trust/trusttest"
	"github.com/dcmesh/dcmesh/wg"
)

func fullRecord(t testing.TB) (trust.Record, *trust.Certificate) {
	ca := trusttest.NewCA(t)
	cert, _ := trusttest.IssueWith(t, ca, "fra1", trusttest.CertOptions{
		Underlay: trusttest.Prefixes(t, "198.51.100.0/24", "2001:db8::/32"),
	}, "10.1.0.0/16", "fd00:1::/48")
	return trust.Record{
		Site:      "fra1",
		Seq:       1767225600123,
		IssuedAt:  time.UnixMilli(1767225600123).UTC(),
		WGCurrent: trusttest.WGKey("cur"),
		WGNext:    trusttest.WGKey("next"),
		Phase:     trust.PhasePrepared,
		Prefixes:  pfxs("10.1.0.0/17", "fd00:1::/48"),
		Endpoints: []netip.AddrPort{ap("198.51.100.7:51820"), ap("[2001:db8::7]:51820")},
		BootID:    [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		Cert:      cert,
		Weight:    1,
	}, cert
}

func TestRecordRoundTrip(t *testing.T) {
	ca := trusttest.NewCA(t)
	cert, key := trusttest.IssueWith(t, ca, "fra1", trusttest.CertOptions{
		Underlay: trusttest.Prefixes(t, "198.51.100.0/24", "2001:db8::/32"),
	}, "10.1.0.0/16", "fd00:1::/48")
	r, _ := fullRecord(t)
	r.Cert = cert
	for _, mod := range []func(*trust.Record){
		func(*trust.Record) {},
		func(r *trust.Record) { r.Phase, r.WGNext = trust.PhaseStable, wg.PublicKey{} },
		func(r *trust.Record) { r.Phase = trust.PhaseSwitched },
		func(r *trust.Record) { r.Leaving, r.Prefixes, r.Endpoints = true, nil, nil },
		func(r *trust.Record) { r.Prefixes = pfxs("10.1.0.1/16") }, // encodable, CheckRecord's to refuse
		func(r *trust.Record) { r.Seq = math.MaxInt64 },
		func(r *trust.Record) { r.Gossip = ap("198.51.100.7:7946") },
		func(r *trust.Record) { r.Gossip = ap("[2001:db8::7]:7946") },
		func(r *trust.Record) {
			r.Phase = trust.PhasePrepared
			dk, _ := mlkem.GenerateKey768()
			r.KEM = dk.EncapsulationKey().Bytes()
			r.PSKSites = []string{"ams1", "par1"}
		},
		func(r *trust.Record) { r.PSKSites = []string{"ams1.1", "ams1", "par1.3"} },
		func(r *trust.Record) { r.Weight = 255 },
		func(r *trust.Record) { r.Weight, r.Standby = 0, true },
		func(r *trust.Record) { r.Drain = true },
		func(r *trust.Record) { r.Weight, r.Standby, r.Drain = 0, true, true },
	} {
		in := r
		mod(&in)
		sr, err := trust.SignRecord(in, key)
		if err != nil {
			t.Fatal(err)
		}
		got, err := trust.DecodeRecord(sr.Raw)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Raw, sr.Raw) {
			t.Error("Raw differs")
		}
		if !got.IssuedAt.Equal(in.IssuedAt) {
			t.Errorf("IssuedAt %v, want %v", got.IssuedAt, in.IssuedAt)
		}
		got.IssuedAt = in.IssuedAt
		if !reflect.DeepEqual(got.Record, in) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got.Record, in)
		}
	}
	sr, _ := trust.SignRecord(r, key)
	t.Logf("record with 2 prefixes, 2 endpoints, certificate of %d bytes: %d bytes", len(cert.Raw), len(sr.Raw))
}

// TestRecordWeight: a record built without a weight is an active gateway of
// weight 1, never a standby one, on the wire and once decoded; only Standby
// makes a standby (wire weight 0).
func TestRecordWeight(t *testing.T) {
	ca := trusttest.NewCA(t)
	cert, key := trusttest.Issue(t, ca, "fra1", "10.1.0.0/16")
	r := trust.Record{Site: "fra1", Seq: 1, WGCurrent: trusttest.WGKey("k"), Cert: cert}
	wire := func(r trust.Record) (weight int, drain bool) {
		t.Helper()
		body, err := trust.EncodeBody(&r)
		if err != nil {
			t.Fatal(err)
		}
		var fields []asn1.RawValue
		if _, err := asn1.Unmarshal(body, &fields); err != nil {
			t.Fatal(err)
		}
		if _, err := asn1.Unmarshal(fields[15].FullBytes, &weight); err != nil {
			t.Fatal(err)
		}
		if _, err := asn1.Unmarshal(fields[16].FullBytes, &drain); err != nil {
			t.Fatal(err)
		}
		return weight, drain
	}
	for _, tc := range []struct {
		name        string
		weight      uint8
		standby     bool
		drain       bool
		wantWire    int
		wantDecoded uint8
	}{
		{"zero value", 0, false, false, 1, 1},
		{"weight 1", 1, false, false, 1, 1},
		{"weight 200, draining", 200, false, true, 200, 200},
		{"standby", 0, true, false, 0, 0},
		{"standby, draining", 0, true, true, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := r
			in.Weight, in.Standby, in.Drain = tc.weight, tc.standby, tc.drain
			if w, d := wire(in); w != tc.wantWire || d != tc.drain {
				t.Errorf("wire weight %d drain %v, want %d %v", w, d, tc.wantWire, tc.drain)
			}
			sr, err := trust.SignRecord(in, key)
			if err != nil {
				t.Fatal(err)
			}
			got, err := trust.DecodeRecord(sr.Raw)
			if err != nil {
				t.Fatal(err)
			}
			if got.Weight != tc.wantDecoded || got.Standby != tc.standby || got.Drain != tc.drain {
				t.Errorf("decoded weight %d standby %v drain %v, want %d %v %v", got.Weight, got.Standby, got.Drain, tc.wantDecoded, tc.standby, tc.drain)
			}
		})
	}
	in := r
	in.Weight, in.Standby = 3, true
	if _, err := trust.SignRecord(in, key); err == nil {
		t.Error("signed a standby record with weight 3")
	}
}

func TestRecordTamper(t *testing.T) {
	r, _ := fullRecord(t)
	ca := trusttest.NewCA(t)
	cert, key := trusttest.Issue(t, ca, "fra1", "10.1.0.0/16", "fd00:1::/48")
	r.Cert = cert
	sr, err := trust.SignRecord(r, key)
	if err != nil {
		t.Fatal(err)
	}
	for i := range sr.Raw {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			b := bytes.Clone(sr.Raw)
			b[i] ^= mask
			if got, err := trust.DecodeRecord(b); err == nil {
				t.Fatalf("byte %d ^ %#x accepted: %+v", i, mask, got.Record)
			} else {
				reasonOf(t, err) // must be a *RejectError
			}
		}
	}
	for n := range len(sr.Raw) {
		if _, err := trust.DecodeRecord(sr.Raw[:n]); reasonOf(t, err) != trust.ReasonDecode {
			t.Fatalf("truncation to %d: %v", n, err)
		}
	}
	for _, tail := range [][]byte{{0}, {0x30, 0}, sr.Raw} {
		if _, err := trust.DecodeRecord(append(bytes.Clone(sr.Raw), tail...)); reasonOf(t, err) != trust.ReasonDecode {
			t.Errorf("trailing %x: %v", tail[:min(len(tail), 4)], err)
		}
	}
	// encoding/asn1 alone would skip an extra element inside the envelope.
	body, sig, err := trust.SplitEnvelope(sr.Raw)
	if err != nil {
		t.Fatal(err)
	}
	extra, _ := asn1.Marshal(struct{ B, S, X []byte }{body, sig, []byte{}})
	if _, err := trust.DecodeRecord(extra); reasonOf(t, err) != trust.ReasonDecode {
		t.Errorf("extra envelope element: %v", err)
	}
	if _, err := trust.DecodeRecord(make([]byte, trust.MaxRecordSize+1)); reasonOf(t, err) != trust.ReasonDecode {
		t.Errorf("oversized: %v", err)
	}
}

func TestRecordWrongIdentity(t *testing.T) {
	r, _ := fullRecord(t)
	ca := trusttest.NewCA(t)
	cert, key := trusttest.Issue(t, ca, "fra1", "10.1.0.0/16")
	_, otherKey := trusttest.Issue(t, ca, "fra1", "10.1.0.0/16")
	r.Cert, r.Prefixes = cert, nil
	if _, err := trust.SignRecord(r, otherKey); err == nil {
		t.Error("SignRecord signed with a key the certificate does not certify")
	}
	body, err := trust.EncodeBody(&r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := trust.DecodeRecord(trust.SealBody(body, otherKey)); reasonOf(t, err) != trust.ReasonSignature {
		t.Errorf("wrong identity: %v", err)
	}
	if _, err := trust.DecodeRecord(trust.SealBody(body, key)); err != nil {
		t.Errorf("right identity: %v", err)
	}
}

// TestRecordCanonical: a body that asn1 would read but that is not the one
// encoding of its record is refused, even when properly signed.
func TestRecordCanonical(t *testing.T) {
	r, _ := fullRecord(t)
	ca := trusttest.NewCA(t)
	cert, key := trusttest.Issue(t, ca, "fra1", "10.1.0.0/16")
	r.Cert, r.Prefixes = cert, nil
	body, err := trust.EncodeBody(&r)
	if err != nil {
		t.Fatal(err)
	}
	var fields []asn1.RawValue
	if _, err := asn1.Unmarshal(body, &fields); err != nil {
		t.Fatal(err)
	}
	reseal := func(mod func(f []asn1.RawValue) []asn1.RawValue) []byte {
		f := mod(append([]asn1.RawValue(nil), fields...))
		b, err := asn1.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		return trust.SealBody(b, key)
	}
	raw := func(v any, params string) asn1.RawValue {
		b, err := asn1.MarshalWithParams(v, params)
		if err != nil {
			t.Fatal(err)
		}
		return asn1.RawValue{FullBytes: b}
	}
	cases := map[string]func(f []asn1.RawValue) []asn1.RawValue{
		"site as PrintableString": func(f []asn1.RawValue) []asn1.RawValue { f[1] = raw("fra1", "printable"); return f },
		"version 1":               func(f []asn1.RawValue) []asn1.RawValue { f[0] = raw(1, ""); return f },
		"version 3":               func(f []asn1.RawValue) []asn1.RawValue { f[0] = raw(3, ""); return f },
		"two gossip addresses": func(f []asn1.RawValue) []asn1.RawValue {
			f[14] = raw([]struct {
				A []byte
				P int
			}{{[]byte{198, 51, 100, 7}, 7946}, {[]byte{198, 51, 100, 8}, 7946}}, "")
			return f
		},
		"gossip address port 0": func(f []asn1.RawValue) []asn1.RawValue {
			f[14] = raw([]struct {
				A []byte
				P int
			}{{[]byte{198, 51, 100, 7}, 0}}, "")
			return f
		},
		"negative seq":            func(f []asn1.RawValue) []asn1.RawValue { f[2] = raw(-1, ""); return f },
		"zero next key, 32 bytes": func(f []asn1.RawValue) []asn1.RawValue { f[5] = raw(make([]byte, 32), ""); return f },
		"phase 3":                 func(f []asn1.RawValue) []asn1.RawValue { f[6] = raw(3, ""); return f },
		"short boot id":           func(f []asn1.RawValue) []asn1.RawValue { f[9] = raw(make([]byte, 15), ""); return f },
		"extra field":             func(f []asn1.RawValue) []asn1.RawValue { return append(f, raw(1, "")) },
		"missing field":           func(f []asn1.RawValue) []asn1.RawValue { return f[:len(f)-1] },
		"prefixes not a SEQUENCE": func(f []asn1.RawValue) []asn1.RawValue { f[7] = raw([]byte{}, ""); return f },
		"prefix /33": func(f []asn1.RawValue) []asn1.RawValue {
			f[7] = raw([]struct {
				A []byte
				B int
			}{{[]byte{10, 0, 0, 0}, 33}}, "")
			return f
		},
		"5-byte prefix address": func(f []asn1.RawValue) []asn1.RawValue {
			f[7] = raw([]struct {
				A []byte
				B int
			}{{[]byte{10, 0, 0, 0, 0}, 8}}, "")
			return f
		},
		"IPv4-mapped endpoint": func(f []asn1.RawValue) []asn1.RawValue {
			f[8] = raw([]struct {
				A []byte
				P int
			}{{netip.MustParseAddr("::ffff:198.51.100.7").AsSlice(), 51820}}, "")
			return f
		},
		"endpoint port 0": func(f []asn1.RawValue) []asn1.RawValue {
			f[8] = raw([]struct {
				A []byte
				P int
			}{{[]byte{198, 51, 100, 7}, 0}}, "")
			return f
		},
		"garbage certificate":                func(f []asn1.RawValue) []asn1.RawValue { f[11] = raw([]byte{0x30, 0}, ""); return f },
		"version 2 without weight and drain": func(f []asn1.RawValue) []asn1.RawValue { return f[:15] },
		"weight 256":                         func(f []asn1.RawValue) []asn1.RawValue { f[15] = raw(256, ""); return f },
		"weight -1":                          func(f []asn1.RawValue) []asn1.RawValue { f[15] = raw(-1, ""); return f },
		"weight 1 in two bytes": func(f []asn1.RawValue) []asn1.RawValue {
			f[15] = asn1.RawValue{FullBytes: []byte{0x02, 0x02, 0x00, 0x01}}
			return f
		},
		"weight as BOOLEAN": func(f []asn1.RawValue) []asn1.RawValue { f[15] = raw(true, ""); return f },
		"drain as INTEGER":  func(f []asn1.RawValue) []asn1.RawValue { f[16] = raw(1, ""); return f },
		"drain true as 0x01": func(f []asn1.RawValue) []asn1.RawValue {
			f[16] = asn1.RawValue{FullBytes: []byte{0x01, 0x01, 0x01}}
			return f
		},
		"drain and weight swapped": func(f []asn1.RawValue) []asn1.RawValue { f[15], f[16] = f[16], f[15]; return f },
		"pre-shared key gateway 0 spelt out": func(f []asn1.RawValue) []asn1.RawValue {
			f[13] = raw("ams1.0", "utf8")
			return f
		},
		"pre-shared key gateway 4": func(f []asn1.RawValue) []asn1.RawValue { f[13] = raw("ams1.4", "utf8"); return f },
	}
	if _, err := trust.DecodeRecord(reseal(func(f []asn1.RawValue) []asn1.RawValue { return f })); err != nil {
		t.Fatalf("unmodified body refused: %v", err)
	}
	for name, mod := range cases {
		t.Run(name, func(t *testing.T) {
			if got, err := trust.DecodeRecord(reseal(mod)); reasonOf(t, err) != trust.ReasonDecode {
				t.Errorf("DecodeRecord = %v, %v; want a decode error", got, err)
			}
		})
	}
	many := make([]struct {
		A []byte
		B int
	}, trust.MaxPrefixes+1)
	for i := range many {
		many[i].A, many[i].B = []byte{10, 1, byte(i >> 8), byte(i)}, 32
	}
	if _, err := trust.DecodeRecord(reseal(func(f []asn1.RawValue) []asn1.RawValue { f[7] = raw(many, ""); return f })); reasonOf(t, err) != trust.ReasonDecode {
		t.Errorf("too many prefixes: %v", err)
	}
}

func TestSignRecordRefuses(t *testing.T) {
	ca := trusttest.NewCA(t)
	cert, key := trusttest.Issue(t, ca, "fra1", "10.1.0.0/16")
	good := trusttest.Record(cert, trusttest.RecordOptions{})
	if _, err := trust.SignRecord(good, key); err != nil {
		t.Fatal(err)
	}
	manyEndpoints := make([]netip.AddrPort, trust.MaxEndpoints+1)
	for i := range manyEndpoints {
		manyEndpoints[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), 51820)
	}
	cases := map[string]func(r *trust.Record){
		"other site":            func(r *trust.Record) { r.Site = "ams2" },
		"no certificate":        func(r *trust.Record) { r.Cert = nil },
		"no current key":        func(r *trust.Record) { r.WGCurrent = wg.PublicKey{} },
		"next key when stable":  func(r *trust.Record) { r.WGNext = trusttest.WGKey("n") },
		"prepared without next": func(r *trust.Record) { r.Phase = trust.PhasePrepared },
		"next equals current":   func(r *trust.Record) { r.Phase, r.WGNext = trust.PhasePrepared, r.WGCurrent },
		"unknown phase":         func(r *trust.Record) { r.Phase = 7 },
		"seq above 2^63-1":      func(r *trust.Record) { r.Seq = math.MaxInt64 + 1 },
		"too many endpoints":    func(r *trust.Record) { r.Endpoints = manyEndpoints },
		"endpoint with zone":    func(r *trust.Record) { r.Endpoints = []netip.AddrPort{ap("[fe80::1%eth0]:51820")} },
		"endpoint port 0":       func(r *trust.Record) { r.Endpoints = []netip.AddrPort{ap("198.51.100.1:0")} },
		"unspecified endpoint":  func(r *trust.Record) { r.Endpoints = []netip.AddrPort{ap("0.0.0.0:51820")} },
		"IPv4-mapped prefix":    func(r *trust.Record) { r.Prefixes = pfxs("::ffff:10.1.0.0/112") },
		"invalid prefix":        func(r *trust.Record) { r.Prefixes = []netip.Prefix{{}} },
		"too many prefixes":     func(r *trust.Record) { r.Prefixes = make([]netip.Prefix, trust.MaxPrefixes+1) },
	}
	for name, mod := range cases {
		t.Run(name, func(t *testing.T) {
			r := good
			mod(&r)
			if _, err := trust.SignRecord(r, key); err == nil {
				t.Error("signed")
			}
		})
	}
	if _, err := trust.SignRecord(good, key[:5]); err == nil {
		t.Error("signed with a truncated key")
	}

	// MaxRecordSize: a certificate with MaxPrefixes IPv6 prefixes and 64
	// underlay ranges, all prefixes announced.
	var big []string
	var underlay []netip.Prefix
	for i := range trust.MaxPrefixes {
		big = append(big, netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0x01, 0x0d, 0xb8, 0x12, 0x34, byte(i >> 8), byte(i)}), 64).String())
		if i < 64 {
			underlay = append(underlay, netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0x12, 0x34, byte(i >> 8), byte(i)}), 64))
		}
	}
	bigCert, bigKey := trusttest.IssueWith(t, ca, "big", trusttest.CertOptions{Underlay: underlay}, big...)
	if _, err := trust.SignRecord(trusttest.Record(bigCert, trusttest.RecordOptions{}), bigKey); err == nil {
		t.Errorf("record with a %d-byte certificate and %d prefixes signed", len(bigCert.Raw), len(bigCert.Prefixes))
	}
	if _, err := trust.SignRecord(trusttest.Record(bigCert, trusttest.RecordOptions{Prefixes: bigCert.Prefixes[:1]}), bigKey); err != nil {
		t.Errorf("record with a %d-byte certificate and one prefix: %v", len(bigCert.Raw), err)
	}
}

func TestNextSeq(t *testing.T) {
	now := time.UnixMilli(1767225600000)
	for _, tc := range []struct {
		last uint64
		now  time.Time
		want uint64
	}{
		{0, now, 1767225600000},
		{1767225600000, now, 1767225600001},
		{1767225600500, now, 1767225600501}, // clock stepped back
		{5, time.Unix(-10, 0), 6},           // clock before 1970
		{0, time.Time{}, 1},
		{math.MaxUint64, now, math.MaxUint64},
	} {
		if got := trust.NextSeq(tc.last, tc.now); got != tc.want {
			t.Errorf("NextSeq(%d, %v) = %d, want %d", tc.last, tc.now, got, tc.want)
		}
	}
}

// TestDecodeRecordMemory: DecodeRecord allocates a bounded multiple of its
// input, for valid records and for hostile ones (many tiny list elements).
func TestDecodeRecordMemory(t *testing.T) {
	r, _ := fullRecord(t)
	ca := trusttest.NewCA(t)
	cert, key := trusttest.Issue(t, ca, "fra1", "10.1.0.0/16", "fd00:1::/48")
	r.Cert = cert
	sr, err := trust.SignRecord(r, key)
	if err != nil {
		t.Fatal(err)
	}
	body, err := trust.EncodeBody(&r)
	if err != nil {
		t.Fatal(err)
	}
	var fields []asn1.RawValue
	if _, err := asn1.Unmarshal(body, &fields); err != nil {
		t.Fatal(err)
	}
	fill := func(i int, el []byte) []byte {
		f := append([]asn1.RawValue(nil), fields...)
		n := (trust.MaxRecordSize - len(sr.Raw) - 16) / len(el)
		f[i] = asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: bytes.Repeat(el, n)}
		b, err := asn1.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		return trust.SealBody(b, key)
	}
	// A certificate with thousands of tiny URI SANs, which x509 parses one
	// by one before ParseCertificate can look at them.
	manyURIs := rawLeafURIs(t, fixedCA(t, 2), (trust.MaxRecordSize-600)/6)
	inputs := map[string][]byte{
		"valid":               sr.Raw,
		"empty prefix items":  fill(7, []byte{0x30, 0x00}),
		"empty endpoint item": fill(8, []byte{0x30, 0x00}),
		"certificate with many URIs": func() []byte {
			f := append([]asn1.RawValue(nil), fields...)
			c, _ := asn1.Marshal(manyURIs)
			f[11] = asn1.RawValue{FullBytes: c}
			b, _ := asn1.Marshal(f)
			return trust.SealBody(b, key)
		}(),
	}
	for name, in := range inputs {
		if len(in) > trust.MaxRecordSize {
			t.Fatalf("%s: test input of %d bytes too large", name, len(in))
		}
		const runs = 20
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range runs {
			trust.DecodeRecord(in)
		}
		runtime.ReadMemStats(&after)
		per := (after.TotalAlloc - before.TotalAlloc) / runs
		t.Logf("%s: %d bytes in, %d bytes allocated per decode", name, len(in), per)
		if per > 64*uint64(len(in))+64<<10 {
			t.Errorf("%s: %d bytes allocated for %d bytes of input", name, per, len(in))
		}
	}
}

// TestDecodeRecordPinned: a record certified by a CA nobody pins is refused
// as unknown_ca before its signature is looked at (a broken signature does
// not change the answer), while a record of the pinned CA decodes as with
// DecodeRecord. Two CAs with the same name are told apart by key id.
func TestDecodeRecordPinned(t *testing.T) {
	pinned, foreign := trusttest.NewCA(t), trusttest.NewCA(t)
	if !bytes.Equal(pinned.Cert.RawSubject, foreign.Cert.RawSubject) {
		t.Fatal("test premise: both test CAs carry the same subject")
	}
	pc, pk := trusttest.Issue(t, pinned, "fra1", "10.1.0.0/16")
	good := trusttest.SignedRecord(t, pc, pk, trusttest.RecordOptions{})
	if _, err := trust.DecodeRecordPinned(good.Raw, []*x509.Certificate{pinned.Cert}); err != nil {
		t.Fatalf("pinned CA's record refused: %v", err)
	}
	fc, fk := trusttest.Issue(t, foreign, "ams1", "10.2.0.0/16")
	bad := trusttest.SignedRecord(t, fc, fk, trusttest.RecordOptions{})
	broken := bytes.Clone(bad.Raw)
	broken[len(broken)-1] ^= 1 // the last byte of the signature
	for name, raw := range map[string][]byte{"signed": bad.Raw, "broken signature": broken} {
		_, err := trust.DecodeRecordPinned(raw, []*x509.Certificate{pinned.Cert})
		if got := reasonOf(t, err); got != trust.ReasonUnknownCA {
			t.Errorf("%s: foreign CA's record: reason %q (%v), want %q", name, got, err, trust.ReasonUnknownCA)
		}
	}
	if _, err := trust.DecodeRecord(broken); reasonOf(t, err) != trust.ReasonSignature {
		t.Errorf("DecodeRecord of the broken record: %v, want a signature error", err)
	}
	if _, err := trust.DecodeRecordPinned(good.Raw, nil); reasonOf(t, err) != trust.ReasonUnknownCA {
		t.Errorf("no pinned CA: %v, want unknown_ca", err)
	}
}
