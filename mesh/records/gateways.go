package records

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/dcmesh/dcmesh/mesh/trust"
)

// The store is keyed by gateway: a record's key is its node name,
// trust.GatewayID.String() ("fra1" for gateway 0 of fra1, as the site name
// always was, "fra1.1" for gateway 1), so the gateways of one site are
// held side by side and none displaces another.
//
// Within one gateway, sequence numbers count per holder: the gateway and
// the identity key that signs its records (trust.CheckRecord). Two
// certificates with different identity keys for one (site, gateway) — two
// machines configured as one gateway, or a gateway re-keyed without
// revoking the old certificate — are settled as trust.ResolveGateways
// settles them: the older certificate keeps the gateway, whichever record
// arrives first. The store holds one record per gateway, so it applies the
// rule when a record arrives (duplicateGateway): a younger holder's record
// is refused while the older one's is held and defends the gateway, and an
// older holder's record replaces a younger one's. Each holder's own
// sequence numbers mean the older holder's record is not refused as a
// replay of the younger one's.
//
// The held record defends only a running gateway, and never against its
// own agent: not when it is a goodbye, its certificate is no longer valid
// (revoked, expired) or it is older than the record expiry (the machine is
// gone: Active would drop it too), nor when the new record has the same
// BootID — the same running agent adopted a renewed certificate, which
// brings a new identity key (`dcmesh renew`); it takes over at once, as
// it did when the store kept one record per site.

// nodeName is the store key of a record: its gateway's node name.
func nodeName(sr *trust.SignedRecord) string { return sr.ID().String() }

// holderKey names a record's holder in the store's sequence numbers (and
// in the state file's holder_seq): node name, "/", identity key in hex.
func holderKey(sr *trust.SignedRecord) string {
	return nodeName(sr) + "/" + hex.EncodeToString(sr.Cert.IdentityKey)
}

// highestFor is the highest sequence number accepted from sr's holder: its
// own, or, for a holder with none, the floor a state file of the previous
// layout (one number per site) left for the gateway.
func (s *Store) highestFor(sr *trust.SignedRecord) uint64 {
	if seq, ok := s.holderSeq[holderKey(sr)]; ok {
		return seq
	}
	return s.floor[nodeName(sr)]
}

// duplicateGateway refuses sr when the store holds a record of the same
// gateway by another holder whose certificate wins (older; the same order
// as trust.ResolveGateways) and that defends the gateway (see above).
func (s *Store) duplicateGateway(sr *trust.SignedRecord, p *trust.Policy) error {
	cur, ok := s.records[nodeName(sr)]
	if !ok || bytes.Equal(cur.Cert.IdentityKey, sr.Cert.IdentityKey) || cur.Leaving || cur.BootID == sr.BootID {
		return nil
	}
	if !certWins(cur.Cert, sr.Cert) || (s.expiry > 0 && p.Now.Sub(cur.IssuedAt) > s.expiry) {
		return nil
	}
	if cur.Cert.Verify(p.CAs, policyCRLs(p), p.Now, p.Skew) != nil {
		return nil
	}
	return &trust.RejectError{Reason: trust.ReasonDuplicateGateway, Detail: fmt.Sprintf(
		"gateway %q is held by an older certificate (serial %s) with another identity key; this one (serial %s) is refused until that one is revoked or expires",
		nodeName(sr), cur.Cert.Serial.Text(16), sr.Cert.Serial.Text(16))}
}

// certWins reports whether a keeps a gateway both claim: the older
// certificate, then the smaller encoding (trust.ResolveGateways' order).
func certWins(a, b *trust.Certificate) bool {
	switch {
	case a.OlderThan(b):
		return true
	case b.OlderThan(a):
		return false
	}
	return bytes.Compare(a.Raw, b.Raw) < 0
}

// SetRecordExpiry tells the store the record expiry (trust.record_expiry):
// a held record older than that no longer defends its gateway against
// another certificate's. Zero (the default) means it defends until its
// certificate is revoked or expires.
func (s *Store) SetRecordExpiry(d time.Duration) { s.expiry = d }
