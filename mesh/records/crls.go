package records

import (
	"bytes"
	"crypto/x509"

	"github.com/dcmesh/dcmesh/mesh/trust"
)

// Revocation is per CA: serials are unique only within one CA, and each CA
// numbers its lists from 1. During and after a CA rollover a node holds the
// newest list of each CA (crls), so that the new CA's first list is not
// taken for an older one of the old CA, and a list revokes only what its CA
// signed.

// sameCA reports whether a and b were signed by the same CA key. Lists not
// made by trust.ParseRevocationList carry no Issuer: those are taken to be
// of the one CA of a single-CA setup.
func sameCA(a, b *trust.RevocationList) bool {
	if a.Issuer == nil || b.Issuer == nil {
		return true
	}
	return bytes.Equal(a.Issuer.RawSubjectPublicKeyInfo, b.Issuer.RawSubjectPublicKeyInfo)
}

// appliesTo reports whether crl is the list of c's CA.
func appliesTo(crl *trust.RevocationList, c *trust.Certificate) bool {
	if crl.Issuer == nil || c.X509 == nil {
		return true
	}
	return c.X509.CheckSignatureFrom(crl.Issuer) == nil
}

// crlIndex is the index in s.crls of the list of crl's CA, or -1.
func (s *Store) crlIndex(crl *trust.RevocationList) int {
	for i, l := range s.crls {
		if sameCA(l, crl) {
			return i
		}
	}
	return -1
}

// holdsCRL reports whether der is exactly a list the store holds.
func (s *Store) holdsCRL(der []byte) bool {
	for _, l := range s.crls {
		if bytes.Equal(l.Raw, der) {
			return true
		}
	}
	return false
}

// CRLs returns the newest list of each CA held, in the order first seen.
func (s *Store) CRLs() []*trust.RevocationList {
	return append([]*trust.RevocationList(nil), s.crls...)
}

// Revocations returns what certificates are checked against: for each CA,
// its newest list held.
func (s *Store) Revocations() trust.CRLSource { return crlList(s.CRLs()) }

// CRLSet returns the lists held of the CAs in cas, for a trust.Policy.
func (s *Store) CRLSet(cas []*x509.Certificate) *trust.CRLSet {
	set := trust.NewCRLSet(cas)
	for _, l := range s.crls {
		_, _ = set.Add(l) // a list of a CA no longer pinned revokes nothing verifiable
	}
	return set
}

type crlList []*trust.RevocationList

func (c crlList) For(issuer *x509.Certificate) *trust.RevocationList {
	for _, l := range c {
		if x := l.For(issuer); x != nil {
			return x
		}
	}
	return nil
}

// policyCRLs is what a policy checks certificates against: its set of
// per-CA lists, else its single list.
func policyCRLs(p *trust.Policy) trust.CRLSource {
	if p.CRLs != nil {
		return p.CRLs
	}
	return p.CRL
}
