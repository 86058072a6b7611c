// Package trust decides which gossiped site records dcmesh believes.
//
// Gossip gives connectivity, not authority: anyone holding the cluster's
// gossip key can talk, so every statement a site makes about itself is
// checked against what the cluster's certificate authority signed. Three key
// tiers:
//
//  1. the cluster CA (Ed25519), kept offline by the operator; agents pin its
//     certificate;
//  2. a gateway identity key (Ed25519), certified by the CA in an X.509
//     certificate that binds the site name, the gateway's index within its
//     site, the site's prefixes, the gateway's overlay address and the
//     underlay ranges its endpoints may use;
//  3. the WireGuard key (X25519), rotated often, published in a record
//     signed by the identity key.
//
// A site has one to MaxGateways gateways; each has its own certificate,
// identity key, WireGuard key, overlay address and record, and is named by a
// GatewayID (site, index). A one-gateway site is gateway 0, whose
// certificate, name and records are exactly those of a site before gateways
// existed.
//
// Certificates are plain X.509 (crypto/x509, Ed25519), readable with
// `openssl x509 -text`: the site name is the subject CN and a URI SAN
// "dcmesh:site=NAME", the gateway index N > 0 "dcmesh:gateway=N" (absent
// for gateway 0), each allowed prefix a URI SAN "dcmesh:prefix=CIDR",
// each underlay range "dcmesh:underlay=CIDR", the overlay address an IP SAN,
// and permission to announce a default route the URI SAN
// "dcmesh:allow-default". Revocations are X.509 CRLs signed by the CA.
// Site records and push/pull state use DER (encoding/asn1) with a detached
// Ed25519 signature over the exact body bytes.
//
// Receivers check in two stages. CheckRecord (per record, reject at the first
// failure with a Reason) and ResolveGateways (across all accepted records: a
// gateway claimed by two identity keys, a prefix claimed by two sites, or a
// WireGuard key used by two gateways, goes to the older certificate —
// earlier NotBefore, then lower serial — whatever the arrival order; the
// gateways of one site share its prefixes). CheckIssue is the same overlap
// rule for the CA, before it signs.
//
// Trust material renews on a running mesh (bundle.go, expiry.go, renew.go,
// seal.go): a trust bundle pins several CAs during a CA rollover, with the
// newest revocation list of each (CRLSet); ExpiryState and CertExpiry turn
// validity periods into health states and status fields; CheckRenewal and
// CompareAuthority decide whether a new certificate is a renewal (same site
// and overlay, same or narrower authority) or a replacement; SealGossipKey
// and OpenGossipKey hand a new gossip key to every enrolled site, sealed to
// its identity key (HPKE) and signed by the CA.
//
// What it does not do: gossip, storage, or programming anything.
package trust
