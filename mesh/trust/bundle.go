package trust

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// A trust bundle pins several CAs at once during a CA rollover: the old CA
// until every site is re-issued from the new one, then the new one alone.
// Revocation is per CA — serials are unique only within one CA — so a
// receiver holds the newest revocation list of each pinned CA (CRLSet) and
// checks a certificate against the list of the CA that signed it.

// MaxPinnedCAs bounds a trust bundle. Two is normal during a rollover; a
// longer list is a mistake (and each pinned CA is a signature check for
// every certificate no earlier CA signed).
const MaxPinnedCAs = 8

// CAID names a CA in status output, metrics and error messages: the first 8
// bytes, in hex, of the SHA-256 of its SubjectPublicKeyInfo. It names the
// key, not the certificate, because the key is what signs: a CA certificate
// re-issued for the same key (a longer validity) is the same CA, and its
// revocation lists apply to both. Compute it with
// `openssl x509 -pubkey -noout -in ca.crt | openssl pkey -pubin -outform DER | sha256sum`.
func CAID(ca *x509.Certificate) string {
	if ca == nil {
		return ""
	}
	sum := sha256.Sum256(ca.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:8])
}

// sameKey reports whether two CA certificates certify the same key.
func sameKey(a, b *x509.Certificate) bool {
	return a != nil && b != nil && bytes.Equal(a.RawSubjectPublicKeyInfo, b.RawSubjectPublicKeyInfo)
}

// ParseCABundle parses a trust bundle file: one to MaxPinnedCAs PEM CA
// certificates, all of which are pinned. On top of ParseCAPEM's checks
// (every block a CA certificate with an Ed25519 key) it refuses:
//
//   - a certificate that is not self-signed with its own key: dcmesh CAs
//     are roots, so anything else is a corrupt file or an intermediate;
//   - the same certificate twice, or two certificates of one key (keep
//     the newer of the two): which one's validity counted would otherwise
//     depend on the order in the file;
//   - a CA expired at now: nothing it signed verifies any more, and the
//     fix (remove it from the bundle, or re-issue the sites from a CA in
//     date) is the operator's to make.
//
// A CA not yet valid is accepted: pre-staging the next CA before its
// validity starts is a legitimate rollover step, and Verify refuses its
// certificates until then. Errors name the block (1-based) and the CA.
func ParseCABundle(b []byte, now time.Time) ([]*x509.Certificate, error) {
	cas, err := ParseCAPEM(b)
	if err != nil {
		return nil, err
	}
	if len(cas) > MaxPinnedCAs {
		return nil, fmt.Errorf("trust: CA bundle holds %d CA certificates, at most %d allowed", len(cas), MaxPinnedCAs)
	}
	for i, c := range cas {
		name := truncate(c.Subject.CommonName, 64)
		if err := c.CheckSignatureFrom(c); err != nil {
			return nil, fmt.Errorf("trust: CA bundle: block %d (%q, id %s) is not self-signed: pin the cluster CA itself", i+1, name, CAID(c))
		}
		for j, o := range cas[:i] {
			switch {
			case bytes.Equal(o.Raw, c.Raw):
				return nil, fmt.Errorf("trust: CA bundle: block %d (%q) is a duplicate of block %d: remove one", i+1, name, j+1)
			case sameKey(o, c):
				return nil, fmt.Errorf("trust: CA bundle: blocks %d and %d (%q, id %s) are two certificates of the same CA key: keep only the newer",
					j+1, i+1, name, CAID(c))
			}
		}
		if now.After(c.NotAfter) {
			return nil, fmt.Errorf("trust: CA bundle: block %d (%q, id %s) expired %s: remove it from the bundle (re-issue the sites it signed from a CA in date first)",
				i+1, name, CAID(c), fmtTime(c.NotAfter))
		}
	}
	return cas, nil
}

// CRLSource gives the revocation list that applies to the certificates one
// CA signed, or nil. *RevocationList (one list: the single-CA setup) and
// *CRLSet (one per pinned CA) implement it; both may be nil.
type CRLSource interface {
	For(issuer *x509.Certificate) *RevocationList
}

// For returns l if issuer signed it (the same CA key), else nil.
func (l *RevocationList) For(issuer *x509.Certificate) *RevocationList {
	if l == nil || l.X509 == nil || issuer == nil {
		return nil
	}
	if l.Issuer != nil {
		if sameKey(l.Issuer, issuer) {
			return l
		}
		return nil
	}
	// A list not made by ParseRevocationList: check the signature.
	if l.X509.CheckSignatureFrom(issuer) == nil {
		return l
	}
	return nil
}

// CRLSet holds the newest revocation list of each pinned CA. It is safe for
// concurrent use. The zero value is not usable: NewCRLSet.
type CRLSet struct {
	cas []*x509.Certificate

	mu   sync.RWMutex
	byCA map[string]*RevocationList // CAID of the signer -> newest list
}

// NewCRLSet returns an empty set for lists signed by one of cas. When the
// pinned CAs change, make a new set and Add the old set's Lists again: a
// removed CA's list is then refused and dropped.
func NewCRLSet(cas []*x509.Certificate) *CRLSet {
	return &CRLSet{cas: slices.Clone(cas), byCA: map[string]*RevocationList{}}
}

// pinnedSigner returns the CA of the set that signed l, or nil.
func (s *CRLSet) pinnedSigner(l *RevocationList) *x509.Certificate {
	for _, ca := range s.cas {
		if ca == nil || !ca.IsCA || !ca.BasicConstraintsValid {
			continue
		}
		if l.Issuer != nil {
			// ParseRevocationList checked the signature against l.Issuer;
			// the same key verifies the same signature.
			if sameKey(l.Issuer, ca) {
				return ca
			}
			continue
		}
		if l.X509.CheckSignatureFrom(ca) == nil {
			return ca
		}
	}
	return nil
}

// Add keeps l if it is the newest list of the CA that signed it: a higher
// CRL number than the list held for that CA. Between two different lists
// with the same number (a CA that issued twice from the same previous list)
// the greater encoding is kept, so that every node ends up holding the same
// list whatever order they arrive in. It reports whether l was kept (false
// for an older or identical list), and refuses a list that no CA of the set
// signed.
func (s *CRLSet) Add(l *RevocationList) (bool, error) {
	if l == nil || l.X509 == nil || l.Number == nil {
		return false, errors.New("trust: CRL set: revocation list is not parsed")
	}
	ca := s.pinnedSigner(l)
	if ca == nil {
		return false, fmt.Errorf("trust: CRL set: revocation list %v (issuer %q) is not signed by a pinned CA",
			l.Number, truncate(l.X509.Issuer.CommonName, 64))
	}
	id := CAID(ca)
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.byCA[id]
	if cur != nil {
		if c := l.Number.Cmp(cur.Number); c < 0 || (c == 0 && bytes.Compare(l.Raw, cur.Raw) <= 0) {
			return false, nil
		}
	}
	kept := *l
	kept.Issuer = ca
	s.byCA[id] = &kept
	return true, nil
}

// AddDER parses a DER revocation list against the set's CAs and Adds it.
func (s *CRLSet) AddDER(der []byte) (bool, error) {
	l, err := ParseRevocationList(der, s.cas)
	if err != nil {
		return false, err
	}
	return s.Add(l)
}

// For returns the newest list of issuer's key, or nil (also for a nil set).
func (s *CRLSet) For(issuer *x509.Certificate) *RevocationList {
	if s == nil || issuer == nil {
		return nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.byCA[CAID(issuer)]
}

// Lists returns the lists held, one per CA, ordered by CA id: what a node
// stores and sends in its push/pull state.
func (s *CRLSet) Lists() []*RevocationList {
	if s == nil {
		return nil
	}
	s.mu.RLock()
	out := make([]*RevocationList, 0, len(s.byCA))
	for _, l := range s.byCA {
		out = append(out, l)
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b *RevocationList) int { return cmp.Compare(CAID(a.Issuer), CAID(b.Issuer)) })
	return out
}

// crlPair is Policy's view of its single CRL and its CRLSet together: the
// newer of the two lists for an issuer (both cumulative, so the newer holds
// every revocation of the older).
type crlPair struct {
	set    *CRLSet
	single *RevocationList
}

func (p crlPair) For(issuer *x509.Certificate) *RevocationList {
	a, b := p.set.For(issuer), p.single.For(issuer)
	if b.NewerThan(a) {
		return b
	}
	return a
}

// revocations returns what Verify checks p's certificates against: CRLs,
// CRL, or both.
func (p *Policy) revocations() CRLSource {
	switch {
	case p.CRLs == nil && p.CRL == nil:
		return nil
	case p.CRL == nil:
		return p.CRLs
	case p.CRLs == nil:
		return p.CRL
	}
	return crlPair{set: p.CRLs, single: p.CRL}
}
