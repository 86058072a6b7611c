// Package trust decides which gossiped site records dcmesh believes.
//
// Gossip gives connectivity, not authority: anyone holding the cluster's
// gossip key can talk, so every statement a site makes about itself is
// checked against what the cluster's certificate authority signed. Three key
// tiers:
//
//  1. the cluster CA (Ed25519), kept offline by the operator; agents pin its
//     certificate;
//  2. a site identity key (Ed25519), certified by the CA in an X.509
//     certificate that binds the site name, its prefixes, its overlay address
//     and the underlay ranges its endpoints may use;
//  3. the WireGuard key (X25519), rotated often, published in a site record
//     signed by the identity key.
//
// Certificates are plain X.509 (crypto/x509, Ed25519), readable with
// `openssl x509 -text`: the site name is the subject CN and a URI SAN
// "dcmesh:site=NAME", each allowed prefix a URI SAN "dcmesh:prefix=CIDR",
// each underlay range "dcmesh:underlay=CIDR", the overlay address an IP SAN,
// and permission to announce a default route the URI SAN
// "dcmesh:allow-default". Revocations are X.509 CRLs signed by the CA.
// Site records and push/pull state use DER (encoding/asn1) with a detached
// Ed25519 signature over the exact body bytes.
//
// Receivers check in two stages. CheckRecord (per record, reject at the first
// failure with a Reason) and Resolve (across all accepted records: a prefix
// claimed by two sites, or a WireGuard key used by two sites, goes to the
// older certificate — earlier NotBefore, then lower serial — whatever the
// arrival order).
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
