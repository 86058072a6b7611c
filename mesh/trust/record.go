package trust

import (
	"bytes"
	"crypto/ed25519"
	"crypto/mlkem"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"reflect"
	"strings"
	"time"

	"github.com/dcmesh/dcmesh/wg"
)

// recordVersion is the only body version this code reads or writes. A
// receiver refuses other versions (ReasonDecode) rather than guess at
// fields it does not know.
const recordVersion = 2

// recordSigContext is prepended to the body before signing, so that a
// signature made by an identity key for a record can never be replayed as a
// signature over anything else that key might ever sign, and vice versa.
const recordSigContext = "dcmesh-record-v1\x00"

// Wire types of a site record; the format is documented on DecodeRecord.
type (
	wireEnvelope struct {
		Body []byte
		Sig  []byte
	}
	wireBody struct {
		Version   int
		Site      string `asn1:"utf8"`
		Seq       int64
		IssuedAt  int64
		WGCurrent []byte
		WGNext    []byte
		Phase     int
		Prefixes  asn1.RawValue
		Endpoints asn1.RawValue
		BootID    []byte
		Leaving   bool
		Cert      []byte
		KEM       []byte
		PSKSites  string `asn1:"utf8"`
		Gossip    asn1.RawValue
		Weight    int
		Drain     bool
	}
	wirePrefix struct {
		Addr []byte
		Bits int
	}
	wireEndpoint struct {
		Addr []byte
		Port int
	}
)

// NextSeq returns the sequence number for a new record: max(last+1, Unix
// milliseconds of now). Using the clock means a site that lost its state
// (reinstalled, disk replaced) still publishes numbers above what receivers
// have stored; last+1 keeps it strictly increasing if the clock steps back.
// It saturates instead of wrapping.
func NextSeq(last uint64, now time.Time) uint64 {
	next := last + 1
	if last == math.MaxUint64 {
		next = last
	}
	if ms := now.UnixMilli(); ms > 0 && uint64(ms) > next {
		next = uint64(ms)
	}
	return next
}

// SignRecord encodes r (format: see DecodeRecord) and signs it with the
// site's identity key. It refuses
// a key that is not the one r.Cert certifies, a record for another site than
// the certificate's, and anything DecodeRecord would refuse (limits, sizes,
// inconsistent rotation phase), so a signed record always decodes. It does
// not apply receiver policy (CheckRecord): announcing prefixes outside the
// certificate is the caller's mistake to avoid.
//
// The returned record is the decoded form of what was signed (times in UTC,
// millisecond precision, a zero Weight of an active gateway as 1), i.e.
// what receivers will see.
func SignRecord(r Record, identity ed25519.PrivateKey) (*SignedRecord, error) {
	return signRecord(r, identity, true)
}

func signRecord(r Record, identity ed25519.PrivateKey, checkSite bool) (*SignedRecord, error) {
	if len(identity) != ed25519.PrivateKeySize {
		return nil, errors.New("trust: sign record: not an Ed25519 private key")
	}
	if r.Cert == nil {
		return nil, errors.New("trust: sign record: no certificate")
	}
	if !r.Cert.IdentityKey.Equal(identity.Public()) {
		return nil, fmt.Errorf("trust: sign record: identity key is not the one certified for site %q", r.Cert.Site)
	}
	if checkSite && r.Site != r.Cert.Site {
		return nil, fmt.Errorf("trust: sign record: record for site %q with a certificate for %q", r.Site, r.Cert.Site)
	}
	body, err := encodeBody(&r)
	if err != nil {
		return nil, fmt.Errorf("trust: sign record: %w", err)
	}
	sig := ed25519.Sign(identity, signedMessage(body))
	env, err := asn1.Marshal(wireEnvelope{Body: body, Sig: sig})
	if err != nil {
		return nil, fmt.Errorf("trust: sign record: %w", err)
	}
	if len(env) > MaxRecordSize {
		return nil, fmt.Errorf("trust: sign record: %d bytes exceeds %d", len(env), MaxRecordSize)
	}
	sr, err := DecodeRecord(env)
	if err != nil {
		return nil, fmt.Errorf("trust: sign record: does not decode: %w", err)
	}
	return sr, nil
}

func signedMessage(body []byte) []byte {
	m := make([]byte, 0, len(recordSigContext)+len(body))
	return append(append(m, recordSigContext...), body...)
}

// checkEncodable checks what the wire format can carry unambiguously; the
// encoder and the decoder share it so that they accept the same records.
func (r *Record) checkEncodable() error {
	if !ValidSiteName(r.Site) {
		return fmt.Errorf("invalid site name %q", truncate(r.Site, 64))
	}
	if r.Seq > math.MaxInt64 {
		return errors.New("sequence number above 2^63-1")
	}
	if r.WGCurrent.IsZero() {
		return errors.New("no current WireGuard key")
	}
	switch r.Phase {
	case PhaseStable:
		if !r.WGNext.IsZero() {
			return errors.New("next WireGuard key set in the stable phase")
		}
	case PhasePrepared, PhaseSwitched:
		if r.WGNext.IsZero() {
			return fmt.Errorf("rotation phase %d without a next WireGuard key", r.Phase)
		}
		if r.WGNext == r.WGCurrent {
			return errors.New("next WireGuard key equals the current one")
		}
	default:
		return fmt.Errorf("unknown rotation phase %d", r.Phase)
	}
	if len(r.Prefixes) > MaxPrefixes {
		return fmt.Errorf("%d prefixes, at most %d", len(r.Prefixes), MaxPrefixes)
	}
	for _, p := range r.Prefixes {
		if !p.IsValid() || p.Addr().Is4In6() {
			return fmt.Errorf("invalid prefix %v", p)
		}
	}
	if len(r.Endpoints) > MaxEndpoints {
		return fmt.Errorf("%d endpoints, at most %d", len(r.Endpoints), MaxEndpoints)
	}
	for _, e := range r.Endpoints {
		if !validEndpoint(e) {
			return fmt.Errorf("invalid endpoint %v", e)
		}
	}
	if r.Gossip != (netip.AddrPort{}) && !validEndpoint(r.Gossip) {
		return fmt.Errorf("invalid gossip address %v", r.Gossip)
	}
	if r.Cert == nil {
		return errors.New("no certificate")
	}
	if len(r.KEM) != 0 && len(r.KEM) != mlkem.EncapsulationKeySize768 {
		return fmt.Errorf("ML-KEM key of %d bytes, want %d", len(r.KEM), mlkem.EncapsulationKeySize768)
	}
	if len(r.KEM) != 0 && r.Phase != PhasePrepared {
		return errors.New("ML-KEM key outside the prepared phase")
	}
	if len(r.PSKSites) > MaxStateRecords {
		return errors.New("too many pre-shared key sites")
	}
	for _, s := range r.PSKSites {
		if _, err := ParseGatewayID(s); err != nil {
			return fmt.Errorf("invalid pre-shared key gateway %q: %v", truncate(s, 64), err)
		}
	}
	if r.Standby && r.Weight != 0 {
		return fmt.Errorf("standby gateway with weight %d: a standby gateway has weight 0", r.Weight)
	}
	return nil
}

// wireWeight is the weight field on the wire: 0 for a standby gateway, else
// the weight, with the Go zero value meaning the default 1.
func (r *Record) wireWeight() int {
	switch {
	case r.Standby:
		return 0
	case r.Weight == 0:
		return 1
	}
	return int(r.Weight)
}

// validEndpoint is what an endpoint or gossip address must be on the wire:
// a specific address without zone, in its shortest form, and a port.
func validEndpoint(e netip.AddrPort) bool {
	a := e.Addr()
	return a.IsValid() && !a.Is4In6() && a.Zone() == "" && !a.IsUnspecified() && e.Port() != 0
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// encodeBody returns the DER RecordBody of r.
func encodeBody(r *Record) ([]byte, error) {
	if err := r.checkEncodable(); err != nil {
		return nil, err
	}
	wp := make([]wirePrefix, len(r.Prefixes))
	for i, p := range r.Prefixes {
		wp[i] = wirePrefix{Addr: p.Addr().AsSlice(), Bits: p.Bits()}
	}
	prefixes, err := asn1.Marshal(wp)
	if err != nil {
		return nil, err
	}
	we := make([]wireEndpoint, len(r.Endpoints))
	for i, e := range r.Endpoints {
		we[i] = wireEndpoint{Addr: e.Addr().AsSlice(), Port: int(e.Port())}
	}
	endpoints, err := asn1.Marshal(we)
	if err != nil {
		return nil, err
	}
	wgs := []wireEndpoint{}
	if r.Gossip.IsValid() {
		wgs = append(wgs, wireEndpoint{Addr: r.Gossip.Addr().AsSlice(), Port: int(r.Gossip.Port())})
	}
	gossip, err := asn1.Marshal(wgs)
	if err != nil {
		return nil, err
	}
	var next []byte
	if !r.WGNext.IsZero() {
		next = r.WGNext[:]
	} else {
		next = []byte{}
	}
	return asn1.Marshal(wireBody{
		Version:   recordVersion,
		Site:      r.Site,
		Seq:       int64(r.Seq),
		IssuedAt:  r.IssuedAt.UnixMilli(),
		WGCurrent: r.WGCurrent[:],
		WGNext:    next,
		Phase:     int(r.Phase),
		Prefixes:  asn1.RawValue{FullBytes: prefixes},
		Endpoints: asn1.RawValue{FullBytes: endpoints},
		BootID:    r.BootID[:],
		Leaving:   r.Leaving,
		Cert:      r.Cert.Raw,
		KEM:       nonNil(r.KEM),
		PSKSites:  strings.Join(r.PSKSites, ","),
		Gossip:    asn1.RawValue{FullBytes: gossip},
		Weight:    r.wireWeight(),
		Drain:     r.Drain,
	})
}

// DecodeRecord parses an encoded record, parses its certificate
// (ParseCertificate: structure only) and verifies the signature with the
// certificate's identity key. It does not check the certificate against the
// CA or apply any policy: that is CheckRecord.
//
// The wire format (DER, encoding/asn1):
//
//	SignedRecord ::= SEQUENCE {
//	    body       OCTET STRING,  -- DER of RecordBody, exactly as signed
//	    signature  OCTET STRING   -- Ed25519(identity, "dcmesh-record-v1\0" || body)
//	}
//	RecordBody ::= SEQUENCE {
//	    version      INTEGER,                 -- 2
//	    site         UTF8String,              -- site name, equal to the certificate's
//	    seq          INTEGER,                 -- 0 .. 2^63-1, see NextSeq
//	    issuedAt     INTEGER,                 -- Unix milliseconds
//	    wgCurrent    OCTET STRING (SIZE(32)), -- WireGuard public key in use
//	    wgNext       OCTET STRING (SIZE(0|32)), -- empty unless rotating
//	    phase        INTEGER,                 -- 0 stable, 1 prepared, 2 switched
//	    prefixes     SEQUENCE OF Prefix,      -- announced, at most MaxPrefixes
//	    endpoints    SEQUENCE OF Endpoint,    -- at most MaxEndpoints
//	    bootID       OCTET STRING (SIZE(16)),
//	    leaving      BOOLEAN,
//	    certificate  OCTET STRING,            -- DER X.509 site certificate
//	    kem          OCTET STRING (SIZE(0|1184)), -- ML-KEM-768 key while prepared
//	    pskSites     UTF8String,              -- comma-separated gateway names
//	    gossip       SEQUENCE OF Endpoint,    -- 0 or 1: the gossip address
//	    weight       INTEGER (0..255),        -- share among the site's gateways; 0 standby
//	    drain        BOOLEAN                  -- planned maintenance: out of peers' groups
//	}
//	Prefix   ::= SEQUENCE { addr OCTET STRING (SIZE(4|16)), bits INTEGER }
//	Endpoint ::= SEQUENCE { addr OCTET STRING (SIZE(4|16)), port INTEGER (1..65535) }
//
// Prefixes and endpoints are address bytes plus a length or port rather than
// text: fixed-size, trivially canonical, and about half the size of the
// text form. IPv4 is always the 4-byte form; IPv4-mapped IPv6 and zones are
// refused. The gateway index is not in the body: it is the certificate's,
// and a record cannot contradict it. Every field is mandatory, so a record
// has exactly one encoding:
// the decoder re-encodes what it read and refuses any difference (non-minimal
// integers, other string types, a 32-byte all-zero wgNext, ...).
//
// It is written for hostile input: bounded by MaxRecordSize, strict DER
// with no trailing data, list lengths counted before anything is allocated
// for them, and never retains b. Errors are *RejectError with ReasonDecode
// or ReasonSignature.
func DecodeRecord(b []byte) (*SignedRecord, error) { return decodeRecord(b, nil) }

// DecodeRecordPinned is DecodeRecord for records from the network: before
// any signature work it refuses (ReasonUnknownCA) a record whose certificate
// names an issuer none of cas is — subject and key identifier compared as
// bytes — so a flood of records certified by a CA nobody pins costs parsing
// only. Certificate.Verify still checks the CA's signature later: a matching
// name proves nothing.
func DecodeRecordPinned(b []byte, cas []*x509.Certificate) (*SignedRecord, error) {
	if len(cas) == 0 {
		return nil, reject(ReasonUnknownCA, "no CA pinned")
	}
	return decodeRecord(b, cas)
}

func decodeRecord(b []byte, pinned []*x509.Certificate) (*SignedRecord, error) {
	if len(b) > MaxRecordSize {
		return nil, reject(ReasonDecode, "record of %d bytes exceeds %d", len(b), MaxRecordSize)
	}
	raw := append([]byte(nil), b...)
	var env wireEnvelope
	if err := unmarshalCanonical(raw, &env); err != nil {
		return nil, reject(ReasonDecode, "envelope: %v", err)
	}
	if len(env.Sig) != ed25519.SignatureSize {
		return nil, reject(ReasonDecode, "signature of %d bytes, want %d", len(env.Sig), ed25519.SignatureSize)
	}
	r, err := decodeBody(env.Body)
	if err != nil {
		return nil, reject(ReasonDecode, "%v", err)
	}
	if pinned != nil && !r.Cert.namesIssuerIn(pinned) {
		return nil, reject(ReasonUnknownCA, "certificate of site %q (serial %x) names an issuer that is not a pinned CA", truncate(r.Site, 64), r.Cert.Serial)
	}
	if !ed25519.Verify(r.Cert.IdentityKey, signedMessage(env.Body), env.Sig) {
		return nil, reject(ReasonSignature, "record of site %q (seq %d) not signed by the identity key of its certificate", r.Site, r.Seq)
	}
	return &SignedRecord{Record: *r, Raw: raw}, nil
}

func decodeBody(body []byte) (*Record, error) {
	var w wireBody
	if err := unmarshalCanonical(body, &w); err != nil {
		return nil, fmt.Errorf("body: %v", err)
	}
	if w.Version != recordVersion {
		return nil, fmt.Errorf("unsupported record version %d", w.Version)
	}
	if w.Seq < 0 {
		return nil, errors.New("negative sequence number")
	}
	if len(w.WGCurrent) != wg.KeyLen || (len(w.WGNext) != 0 && len(w.WGNext) != wg.KeyLen) {
		return nil, errors.New("bad WireGuard key length")
	}
	if len(w.BootID) != 16 {
		return nil, errors.New("bad boot id length")
	}
	if w.Phase < 0 || w.Phase > int(PhaseSwitched) {
		return nil, fmt.Errorf("unknown rotation phase %d", w.Phase)
	}
	if w.Weight < 0 || w.Weight > math.MaxUint8 {
		return nil, fmt.Errorf("weight %d, want 0 to 255", w.Weight)
	}
	r := &Record{
		Site:     w.Site,
		Seq:      uint64(w.Seq),
		IssuedAt: time.UnixMilli(w.IssuedAt).UTC(),
		Phase:    Phase(w.Phase),
		Leaving:  w.Leaving,
		Weight:   uint8(w.Weight),
		Standby:  w.Weight == 0,
		Drain:    w.Drain,
	}
	copy(r.WGCurrent[:], w.WGCurrent)
	copy(r.WGNext[:], w.WGNext)
	copy(r.BootID[:], w.BootID)
	if len(w.KEM) > 0 {
		r.KEM = w.KEM
	}
	if w.PSKSites != "" {
		if strings.Count(w.PSKSites, ",") >= MaxStateRecords {
			return nil, errors.New("too many pre-shared key sites")
		}
		r.PSKSites = strings.Split(w.PSKSites, ",")
	}

	err := eachElement(w.Prefixes, MaxPrefixes, "prefixes", func(el []byte) error {
		var wp wirePrefix
		if err := unmarshalCanonical(el, &wp); err != nil {
			return err
		}
		a, ok := netip.AddrFromSlice(wp.Addr)
		if !ok {
			return errors.New("bad prefix address length")
		}
		if wp.Bits < 0 || wp.Bits > a.BitLen() {
			return fmt.Errorf("bad prefix length %d", wp.Bits)
		}
		r.Prefixes = append(r.Prefixes, netip.PrefixFrom(a, wp.Bits))
		return nil
	})
	if err != nil {
		return nil, err
	}
	if r.Endpoints, err = decodeEndpoints(w.Endpoints, MaxEndpoints, "endpoints"); err != nil {
		return nil, err
	}
	gossip, err := decodeEndpoints(w.Gossip, 1, "gossip address")
	if err != nil {
		return nil, err
	}
	if len(gossip) == 1 {
		r.Gossip = gossip[0]
	}
	if r.Cert, err = ParseCertificate(w.Cert); err != nil {
		return nil, err
	}
	if err := r.checkEncodable(); err != nil {
		return nil, err
	}
	// The one-encoding rule: whatever asn1 tolerated must still produce the
	// same bytes, or two different byte strings would be "the same record".
	again, err := encodeBody(r)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(again, body) {
		return nil, errors.New("body is not in canonical DER form")
	}
	return r, nil
}

// decodeEndpoints decodes a SEQUENCE OF Endpoint of at most max elements.
func decodeEndpoints(seq asn1.RawValue, max int, what string) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	err := eachElement(seq, max, what, func(el []byte) error {
		var we wireEndpoint
		if err := unmarshalCanonical(el, &we); err != nil {
			return err
		}
		a, ok := netip.AddrFromSlice(we.Addr)
		if !ok {
			return errors.New("bad address length")
		}
		if we.Port <= 0 || we.Port > math.MaxUint16 {
			return fmt.Errorf("bad port %d", we.Port)
		}
		out = append(out, netip.AddrPortFrom(a, uint16(we.Port)))
		return nil
	})
	return out, err
}

// eachElement calls f on each element of a DER SEQUENCE OF, refusing more
// than max elements before decoding them (encoding/asn1 would size a slice
// from the element count, which hostile input controls).
func eachElement(seq asn1.RawValue, max int, what string, f func(el []byte) error) error {
	if seq.Class != asn1.ClassUniversal || seq.Tag != asn1.TagSequence || !seq.IsCompound {
		return fmt.Errorf("%s: not a SEQUENCE", what)
	}
	n := 0
	for rest := seq.Bytes; len(rest) > 0; {
		if n == max {
			return fmt.Errorf("%s: more than %d", what, max)
		}
		var el asn1.RawValue
		var err error
		if rest, err = asn1.Unmarshal(rest, &el); err != nil {
			return fmt.Errorf("%s: %v", what, err)
		}
		if err := f(el.FullBytes); err != nil {
			return fmt.Errorf("%s: %v", what, err)
		}
		n++
	}
	return nil
}

// unmarshalCanonical decodes b into the struct v points to and insists
// that b is exactly the DER encoding of the result. Without the re-encoding
// encoding/asn1 would silently skip extra elements at the end of a
// SEQUENCE and accept any string type for a string field, so two different
// byte strings could decode to the same value.
func unmarshalCanonical(b []byte, v any) error {
	if err := unmarshalExact(b, v); err != nil {
		return err
	}
	again, err := asn1.Marshal(reflect.ValueOf(v).Elem().Interface())
	if err != nil {
		return err
	}
	if !bytes.Equal(again, b) {
		return errors.New("not in canonical DER form")
	}
	return nil
}

// unmarshalExact decodes one DER value that must span all of b.
func unmarshalExact(b []byte, v any) error {
	rest, err := asn1.Unmarshal(b, v)
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return errors.New("trailing data")
	}
	return nil
}
