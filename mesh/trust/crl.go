package trust

import (
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"
)

// MaxCRLSize bounds a DER revocation list accepted from the network or from
// disk. At about 40 bytes per entry it holds some 1,600 revocations, far more
// than a datacenter cluster revokes while the certificates are still valid.
const MaxCRLSize = 64 << 10

// MaxStateCRLs bounds the revocation lists in one push/pull state: one or
// two per pinned CA is normal.
const MaxStateCRLs = 64

// Revoke issues the next revocation list: every serial of prev (with its
// original revocation time) plus serials (revoked at now), deduplicated and
// sorted, numbered prev.Number+1 (1 without prev), valid for validity.
//
// Lists are cumulative so that a receiver only ever needs the newest one
// per CA (highest Number, see NewerThan); NextUpdate is informational —
// receivers keep honouring a list after it, since an expired list is still
// better than none. prev must have been signed by this CA.
func (ca *CA) Revoke(prev *RevocationList, serials []*big.Int, now time.Time, validity time.Duration) (*RevocationList, error) {
	if err := ca.check(); err != nil {
		return nil, err
	}
	if validity <= 0 {
		return nil, errors.New("trust: revoke: validity must be positive")
	}
	number := big.NewInt(1)
	var entries []x509.RevocationListEntry
	seen := make(map[string]bool)
	if prev != nil {
		if prev.X509 == nil || prev.Number == nil {
			return nil, errors.New("trust: revoke: previous list is not parsed")
		}
		if err := prev.X509.CheckSignatureFrom(ca.Cert); err != nil {
			return nil, errors.New("trust: revoke: previous list was not signed by this CA")
		}
		number = new(big.Int).Add(prev.Number, big.NewInt(1))
		for _, e := range prev.X509.RevokedCertificateEntries {
			if k := e.SerialNumber.String(); !seen[k] {
				seen[k] = true
				entries = append(entries, x509.RevocationListEntry{SerialNumber: e.SerialNumber, RevocationTime: e.RevocationTime})
			}
		}
	}
	for _, s := range serials {
		if s == nil || s.Sign() <= 0 {
			return nil, errors.New("trust: revoke: serial numbers must be positive")
		}
		if k := s.String(); !seen[k] {
			seen[k] = true
			entries = append(entries, x509.RevocationListEntry{SerialNumber: new(big.Int).Set(s), RevocationTime: now})
		}
	}
	slices.SortFunc(entries, func(a, b x509.RevocationListEntry) int { return a.SerialNumber.Cmp(b.SerialNumber) })
	tmpl := &x509.RevocationList{
		Number:                    number,
		ThisUpdate:                now,
		NextUpdate:                now.Add(validity),
		RevokedCertificateEntries: entries,
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("trust: revoke: %w", err)
	}
	l, err := ParseRevocationList(der, []*x509.Certificate{ca.Cert})
	if err != nil {
		return nil, fmt.Errorf("trust: revoke: %w", err)
	}
	return l, nil
}

// ParseRevocationList parses a DER CRL of at most MaxCRLSize bytes (no
// trailing data) and checks that one of the pinned CAs signed it with
// Ed25519 and that it carries a CRL number (needed to pick the newest list);
// that CA becomes the list's Issuer.
// Lists from unknown CAs are refused: anyone with the gossip key could
// otherwise fill a node's state with junk lists. The input is not retained.
func ParseRevocationList(der []byte, cas []*x509.Certificate) (*RevocationList, error) {
	if len(der) == 0 {
		return nil, errors.New("trust: empty revocation list")
	}
	if len(der) > MaxCRLSize {
		return nil, fmt.Errorf("trust: revocation list of %d bytes exceeds %d", len(der), MaxCRLSize)
	}
	der = append([]byte(nil), der...) // x509 keeps slices of its input
	x, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("trust: %w", err)
	}
	if len(x.Raw) != len(der) {
		return nil, errors.New("trust: trailing data after revocation list")
	}
	if x.SignatureAlgorithm != x509.PureEd25519 {
		return nil, fmt.Errorf("trust: revocation list signed with %v, want Ed25519", x.SignatureAlgorithm)
	}
	var issuer *x509.Certificate
	for _, ca := range cas {
		if ca != nil && ca.IsCA && ca.BasicConstraintsValid && x.CheckSignatureFrom(ca) == nil {
			issuer = ca
			break
		}
	}
	if issuer == nil {
		return nil, errors.New("trust: revocation list is not signed by a pinned CA")
	}
	if x.Number == nil || x.Number.Sign() < 0 {
		return nil, errors.New("trust: revocation list has no CRL number")
	}
	l := &RevocationList{Raw: x.Raw, X509: x, Number: x.Number, Issuer: issuer}
	for _, e := range x.RevokedCertificateEntries {
		if e.SerialNumber == nil {
			return nil, errors.New("trust: revocation list entry without serial")
		}
		l.Serials = append(l.Serials, e.SerialNumber)
	}
	return l, nil
}

// Revoked reports whether serial is on the list. A nil list revokes nothing.
func (l *RevocationList) Revoked(serial *big.Int) bool {
	if l == nil || serial == nil {
		return false
	}
	for _, s := range l.Serials {
		if s.Cmp(serial) == 0 {
			return true
		}
	}
	return false
}

// NewerThan reports whether l supersedes o: both from the same CA (the
// caller's business) and l has the higher CRL number. Since lists are
// cumulative, a node keeps only the newest list per CA.
func (l *RevocationList) NewerThan(o *RevocationList) bool {
	if o == nil {
		return l != nil
	}
	if l == nil {
		return false
	}
	return l.Number.Cmp(o.Number) > 0
}
