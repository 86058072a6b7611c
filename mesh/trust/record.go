package trust

import (
	"crypto/ed25519"
	"crypto/mlkem"
	"encoding/asn1"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"time"
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
