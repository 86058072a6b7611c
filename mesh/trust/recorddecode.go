package trust

import (
	"bytes"
	"crypto/ed25519"
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
	if err := w.checkFields(); err != nil {
		return nil, err
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

	var err error
	if r.Prefixes, err = decodePrefixes(w.Prefixes); err != nil {
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

// checkFields checks the scalar fields of a decoded body: version, sequence,
// key and boot id lengths, phase and weight ranges.
func (w *wireBody) checkFields() error {
	if w.Version != recordVersion {
		return fmt.Errorf("unsupported record version %d", w.Version)
	}
	if w.Seq < 0 {
		return errors.New("negative sequence number")
	}
	if len(w.WGCurrent) != wg.KeyLen || (len(w.WGNext) != 0 && len(w.WGNext) != wg.KeyLen) {
		return errors.New("bad WireGuard key length")
	}
	if len(w.BootID) != 16 {
		return errors.New("bad boot id length")
	}
	if w.Phase < 0 || w.Phase > int(PhaseSwitched) {
		return fmt.Errorf("unknown rotation phase %d", w.Phase)
	}
	if w.Weight < 0 || w.Weight > math.MaxUint8 {
		return fmt.Errorf("weight %d, want 0 to 255", w.Weight)
	}
	return nil
}

// decodePrefixes decodes a SEQUENCE OF Prefix of at most MaxPrefixes
// elements (canonical form is checked later, against the certificate).
func decodePrefixes(seq asn1.RawValue) ([]netip.Prefix, error) {
	var out []netip.Prefix
	err := eachElement(seq, MaxPrefixes, "prefixes", func(el []byte) error {
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
		out = append(out, netip.PrefixFrom(a, wp.Bits))
		return nil
	})
	return out, err
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
