package trust

import (
	"crypto/ed25519"
	"crypto/x509"
	"math/big"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/dcmesh/dcmesh/wg"
)

// ---- CA and certificates ----

// CA is the cluster certificate authority: its self-signed certificate and
// its private key (which only the operator's machine holds).
type CA struct {
	Cert *x509.Certificate
	Key  ed25519.PrivateKey
}

// IssueRequest describes a site certificate: one gateway of a site.
type IssueRequest struct {
	Site string
	// Gateway is the gateway's index among its site's, 0 to MaxGateways-1.
	// Index 0 is not written into the certificate, so a site's first (or
	// only) gateway has exactly the certificate it had before gateways.
	Gateway      uint8
	IdentityKey  ed25519.PublicKey
	Prefixes     []netip.Prefix // prefixes the site may announce
	Overlay      netip.Addr     // the gateway's own overlay address
	Underlay     []netip.Prefix // where its endpoints and gossip address may be; empty: anywhere
	AllowDefault bool           // may announce 0.0.0.0/0 or ::/0
	NotBefore    time.Time
	NotAfter     time.Time
}

// Certificate is a parsed site certificate.
type Certificate struct {
	Raw          []byte // DER
	X509         *x509.Certificate
	Site         string
	Gateway      uint8 // 0 when the certificate has no "dcmesh:gateway=" URI
	IdentityKey  ed25519.PublicKey
	Prefixes     []netip.Prefix
	Overlay      netip.Addr // the gateway's own
	Underlay     []netip.Prefix
	AllowDefault bool
	Serial       *big.Int
	NotBefore    time.Time
	NotAfter     time.Time

	// signedBy remembers the pinned CA whose signature Verify checked:
	// the ed25519 check is the expensive part of Verify (~50 µs) and the
	// agent re-verifies every held certificate on each reconcile, so it is
	// done once per certificate and CA (validity and revocation are still
	// checked every time).
	signedBy atomic.Pointer[x509.Certificate]
}

// RevocationList is a parsed, CA-signed CRL: every revocation so far.
type RevocationList struct {
	Raw     []byte // DER
	X509    *x509.RevocationList
	Number  *big.Int
	Serials []*big.Int
	// Issuer is the pinned CA whose signature ParseRevocationList checked:
	// the list applies to the certificates that CA's key signed, and no
	// others (serials are unique per CA).
	Issuer *x509.Certificate
}

// ---- site records ----

// Phase is where a site is in a WireGuard key rotation.
type Phase uint8

const (
	PhaseStable   Phase = 0 // only Current is in use
	PhasePrepared Phase = 1 // Next announced; peers pre-install it
	PhaseSwitched Phase = 2 // the site now uses Next; peers cut over
)

// Record is what one gateway of a site says about itself. Which gateway is
// not in the record: it is the certificate's (Cert.Gateway, see ID).
type Record struct {
	Site      string
	Seq       uint64 // strictly increasing per gateway: NextSeq
	IssuedAt  time.Time
	WGCurrent wg.PublicKey
	WGNext    wg.PublicKey // zero unless a rotation is under way
	Phase     Phase
	Prefixes  []netip.Prefix // announced; must be within Cert.Prefixes
	Endpoints []netip.AddrPort
	// Gossip is the address the site's gossip node advertises (zero if it
	// has none). Receivers bind the site's name to it: direct messages
	// go there, and a gossip node claiming the name from elsewhere is a
	// squatter, whatever memberlist's name table says.
	Gossip  netip.AddrPort
	BootID  [16]byte
	Leaving bool // a signed goodbye: receivers drop the site
	Cert    *Certificate
	// KEM is a fresh ML-KEM-768 encapsulation key, published during a
	// rotation (prepared) by a site that uses pre-shared keys: each peer
	// encapsulates a secret to it and sends the ciphertext with its ack.
	KEM []byte
	// PSKSites are the gateways (GatewayID.String: "fra1", "fra1.1") whose
	// current key this gateway holds a pre-shared key for; a peer not
	// listed clears its own for this gateway's key.
	PSKSites []string

	// Weight is the gateway's share of its site's traffic among the site's
	// active gateways, 1 to 255. Zero means the default, 1: a record built
	// without thinking about weights is an ordinary active gateway, never a
	// standby one. Decoded records always carry 1 to 255 here, or 0 when
	// Standby.
	Weight uint8
	// Standby: the gateway carries traffic only while no active gateway of
	// its site is healthy (on the wire: weight 0). Weight must be 0.
	Standby bool
	// Drain: planned maintenance. Peers take the gateway out of their
	// groups; it stays a peer, so traffic already on its way is delivered.
	Drain bool
}

// ID names the gateway a record speaks for: its site and its
// certificate's gateway index.
func (r *Record) ID() GatewayID {
	id := GatewayID{Site: r.Site}
	if r.Cert != nil {
		id.Gateway = r.Cert.Gateway
	}
	return id
}

// SignedRecord is a decoded record whose signature has been verified against
// the identity key in its certificate (not yet against the CA: CheckRecord).
type SignedRecord struct {
	Record
	Raw []byte // the encoded envelope, as gossiped
}

// ---- validation ----

// Reason says why a record was rejected. Reasons are stable strings: they
// become metric labels.
type Reason string

const (
	ReasonDecode          Reason = "decode"             // not a well-formed record
	ReasonSignature       Reason = "signature"          // record signature invalid
	ReasonUnknownCA       Reason = "unknown_ca"         // certificate not signed by a pinned CA
	ReasonNotYetValid     Reason = "cert_not_yet_valid" //
	ReasonExpired         Reason = "cert_expired"       //
	ReasonRevoked         Reason = "revoked"            // certificate serial in the CRL
	ReasonNameMismatch    Reason = "name_mismatch"      // record site != certificate site
	ReasonNodeMismatch    Reason = "node_mismatch"      // sender's gossip node name != the gateway's (GatewayID.String)
	ReasonSelf            Reason = "self"               // someone else speaking for the local gateway
	ReasonReplay          Reason = "replay"             // sequence not newer than the highest seen
	ReasonPrefixNotInCert Reason = "prefix_not_in_cert" //
	ReasonDefaultRoute    Reason = "default_route"      // /0 without the certificate's permission
	ReasonEndpoint        Reason = "endpoint_not_in_underlay"
	ReasonOverlapLocal    Reason = "overlap_local"    // prefix overlaps the local site's
	ReasonOverlapUnderlay Reason = "overlap_underlay" // prefix covers an underlay/endpoint range
	ReasonOverlapSite     Reason = "overlap_site"     // Resolve: an older certificate owns it
	ReasonDuplicateKey    Reason = "duplicate_wg_key" // Resolve: an older certificate uses the key
	// Resolve: an older certificate with another identity key holds the
	// same (site, gateway).
	ReasonDuplicateGateway Reason = "duplicate_gateway"
)

// Reasons lists every Reason, for metrics that must show all of them.
var Reasons = []Reason{ReasonDecode, ReasonSignature, ReasonUnknownCA, ReasonNotYetValid, ReasonExpired, ReasonRevoked,
	ReasonNameMismatch, ReasonNodeMismatch, ReasonSelf, ReasonReplay, ReasonPrefixNotInCert, ReasonDefaultRoute,
	ReasonEndpoint, ReasonOverlapLocal, ReasonOverlapUnderlay, ReasonOverlapSite, ReasonDuplicateKey,
	ReasonDuplicateGateway}

// RejectError is returned by CheckRecord.
type RejectError struct {
	Reason Reason
	Detail string // for the log line; never contains key material
}

func (e *RejectError) Error() string { return string(e.Reason) + ": " + e.Detail }

// Policy is what a receiver checks records against.
type Policy struct {
	CAs       []*x509.Certificate // pinned
	LocalSite string
	// LocalGateway is this agent's gateway index: records of LocalSite
	// with another index are its siblings (see CheckRecord).
	LocalGateway  uint8
	LocalPrefixes []netip.Prefix  // local prefixes and the overlay address
	Underlay      []netip.Prefix  // ranges no remote prefix may cover (own underlay, known endpoints)
	CRL           *RevocationList // may be nil; the single list of a one-CA setup
	// CRLs holds the newest list of each pinned CA (may be nil). When both
	// CRL and CRLs are set, the newer list of the certificate's CA counts.
	CRLs *CRLSet
	Now  time.Time
	Skew time.Duration // tolerated clock difference for validity checks
}

// Conflict is one loser of Resolve: the record of gateway Gateway of Site
// lost Prefix, or everything, to gateway WinnerGateway of site Winner.
type Conflict struct {
	Site          string
	Gateway       uint8
	Prefix        netip.Prefix // zero for a duplicate key or gateway
	Winner        string
	WinnerGateway uint8
	Reason        Reason
	// Serial is the losing certificate's serial number (hex) for
	// ReasonDuplicateGateway, where winner and loser have the same name;
	// empty otherwise.
	Serial string
}

// State is the push/pull payload: every record and revocation list a node
// holds.
type State struct {
	Records [][]byte // encoded SignedRecords
	CRLs    [][]byte // DER CRLs
}

// Limits bound what decoders accept from the network.
const (
	MaxRecordSize   = 16 << 10
	MaxStateSize    = 4 << 20
	MaxStateRecords = 2048
	MaxPrefixes     = 256
	MaxEndpoints    = 16
	// MaxGateways bounds the gateways of one site: indexes 0 to
	// MaxGateways-1.
	MaxGateways = 4
)
