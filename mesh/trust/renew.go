package trust

import (
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Renewal replaces a running site's certificate with a new one for the same
// site, on the running mesh: peers adopt it with the site's next record.
// It may keep or narrow what the site is allowed, never widen it — a
// renewal is routine and must not be the way a site gains routes. What
// changes who the site is, or where it is in the overlay, is a replacement
// (`ca issue --replace`, re-enrolment), not a renewal.

// Authority is what a site certificate permits: the fields a renewal may
// keep or narrow but not widen.
type Authority struct {
	Site         string
	Prefixes     []netip.Prefix
	Overlay      netip.Addr
	Underlay     []netip.Prefix // empty: anywhere
	AllowDefault bool
	// TODO(gateway): the gateway index, once Certificate.Gateway exists:
	// a renewal keeps it (a different index is a replacement).
}

// Authority returns what c permits.
func (c *Certificate) Authority() Authority {
	return Authority{Site: c.Site, Prefixes: c.Prefixes, Overlay: c.Overlay, Underlay: c.Underlay, AllowDefault: c.AllowDefault}
}

// Authority returns what a certificate issued for r would permit.
func (r *IssueRequest) Authority() Authority {
	return Authority{Site: r.Site, Prefixes: r.Prefixes, Overlay: r.Overlay, Underlay: r.Underlay, AllowDefault: r.AllowDefault}
}

// AuthorityChange is how a new certificate's authority differs from the
// running one's; each entry is a sentence naming the field and the values.
type AuthorityChange struct {
	// Replacement lists changes that make the new certificate another
	// site's: a different site name, or a different overlay address (it is
	// the site's address on its own interface and in every peer's allowed
	// IPs and routes; moving it cannot be done without loss, so it is a
	// replacement, announced as such).
	Replacement []string
	// Wider lists what the new certificate permits that the running one
	// does not: a prefix or underlay range outside the running ones,
	// underlay "anywhere" where it was limited, allow-default gained.
	Wider []string
	// Narrower lists what it no longer permits. A renewal may narrow; the
	// site must then stop announcing what was dropped first.
	Narrower []string
}

// Renewal reports whether the change is allowed for a renewal: nothing
// replaced, nothing widened.
func (d AuthorityChange) Renewal() bool { return len(d.Replacement) == 0 && len(d.Wider) == 0 }

// Same reports whether the authority did not change at all.
func (d AuthorityChange) Same() bool { return d.Renewal() && len(d.Narrower) == 0 }

// CompareAuthority compares a new certificate's authority with the running
// (or last issued) one's. `ca issue` uses it to refuse re-issuing an
// existing site name with other prefixes unless told it is a replacement
// (Renewal false), and to warn about what a renewal drops (Narrower).
func CompareAuthority(running, next Authority) AuthorityChange {
	var d AuthorityChange
	if next.Site != running.Site {
		d.Replacement = append(d.Replacement, fmt.Sprintf("site name %q is not the running certificate's %q", next.Site, running.Site))
	}
	if next.Overlay != running.Overlay {
		d.Replacement = append(d.Replacement, fmt.Sprintf("overlay address changes from %s to %s: that is a replacement, not a renewal", running.Overlay, next.Overlay))
	}
	wider, narrower := comparePrefixes("prefixes", running.Prefixes, next.Prefixes)
	d.Wider, d.Narrower = append(d.Wider, wider...), append(d.Narrower, narrower...)
	switch {
	case len(running.Underlay) > 0 && len(next.Underlay) == 0:
		d.Wider = append(d.Wider, fmt.Sprintf("wider underlay: anywhere, the running certificate's is limited to %s", joinPrefixes(running.Underlay)))
	case len(running.Underlay) == 0 && len(next.Underlay) > 0:
		d.Narrower = append(d.Narrower, fmt.Sprintf("underlay limited to %s (was anywhere)", joinPrefixes(next.Underlay)))
	case len(running.Underlay) > 0:
		wider, narrower := comparePrefixes("underlay", running.Underlay, next.Underlay)
		d.Wider, d.Narrower = append(d.Wider, wider...), append(d.Narrower, narrower...)
	}
	switch {
	case next.AllowDefault && !running.AllowDefault:
		d.Wider = append(d.Wider, "allow-default gained: the running certificate may not announce a default route")
	case !next.AllowDefault && running.AllowDefault:
		d.Narrower = append(d.Narrower, "allow-default dropped: the site may no longer announce a default route")
	}
	return d
}

// comparePrefixes lists the prefixes of next outside every prefix of
// running (wider) and the prefixes of running not wholly in next
// (narrower), naming the nearest prefix on the other side.
func comparePrefixes(what string, running, next []netip.Prefix) (wider, narrower []string) {
	for _, p := range next {
		if containedInAny(p, running) {
			continue
		}
		if q, ok := firstOverlapping(p, running); ok {
			wider = append(wider, fmt.Sprintf("wider %s: %s is not inside the running certificate's %s", what, p, q))
		} else {
			wider = append(wider, fmt.Sprintf("wider %s: %s is not in the running certificate (%s)", what, p, joinPrefixes(running)))
		}
	}
	for _, q := range running {
		if containedInAny(q, next) {
			continue
		}
		var inside []netip.Prefix
		for _, p := range next {
			if p.Overlaps(q) {
				inside = append(inside, p)
			}
		}
		if len(inside) > 0 {
			narrower = append(narrower, fmt.Sprintf("%s: %s narrowed to %s", what, q, joinPrefixes(inside)))
		} else {
			narrower = append(narrower, fmt.Sprintf("%s: %s dropped", what, q))
		}
	}
	return wider, narrower
}

func firstOverlapping(p netip.Prefix, ps []netip.Prefix) (netip.Prefix, bool) {
	for _, q := range ps {
		if q.Overlaps(p) {
			return q, true
		}
	}
	return netip.Prefix{}, false
}

func joinPrefixes(ps []netip.Prefix) string {
	if len(ps) == 0 {
		return "none"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

// RenewalCheck is what CheckRenewal checks a new certificate against.
type RenewalCheck struct {
	CAs  []*x509.Certificate // pinned
	CRLs CRLSource           // may be nil
	Now  time.Time
	Skew time.Duration
	// Announced are the prefixes the site announces now and Endpoints its
	// WireGuard endpoints and gossip address: each must stay within the
	// new certificate, or peers would refuse the site's next record and
	// drop its routes (narrow the configuration first, then renew).
	Announced []netip.Prefix
	Endpoints []netip.Addr
}

// RenewalError lists every reason a renewal was refused.
type RenewalError struct {
	Site     string
	Problems []string
}

func (e *RenewalError) Error() string {
	return fmt.Sprintf("trust: renewal of site %q refused: %s", e.Site, strings.Join(e.Problems, "; "))
}

// CheckRenewal decides whether next may replace running as a running
// site's certificate. It refuses (a *RenewalError listing every problem):
//
//   - a certificate that does not verify now: signed by a pinned CA (not
//     necessarily running's: a CA rollover re-issues from the new CA), in
//     date within Skew, not revoked;
//   - a replacement or a wider authority (CompareAuthority): another site
//     name or overlay address, prefixes or underlay ranges not inside the
//     running ones, allow-default gained;
//   - a narrower authority that no longer covers what the site announces
//     now (rc.Announced, rc.Endpoints);
//   - the running certificate itself (same serial), or one with an
//     earlier not-before: a renewal never rolls back to an older
//     certificate.
//
// The identity key may stay or change: a new key is a key rotation, and the
// new private key must come with the certificate (CheckIdentityKey). The
// running certificate is not verified: renewing a site whose certificate
// has already expired, or whose CA is no longer pinned, is how it recovers.
func CheckRenewal(running, next *Certificate, rc RenewalCheck) error {
	if running == nil || next == nil || next.X509 == nil {
		return errors.New("trust: renewal: no certificate")
	}
	var problems []string
	if err := next.Verify(rc.CAs, rc.CRLs, rc.Now, rc.Skew); err != nil {
		detail := err.Error()
		var re *RejectError
		if errors.As(err, &re) {
			detail = re.Detail + " (" + string(re.Reason) + ")"
		}
		problems = append(problems, "the new certificate does not verify: "+detail)
	}
	d := CompareAuthority(running.Authority(), next.Authority())
	problems = append(problems, d.Replacement...)
	problems = append(problems, d.Wider...)
	for _, p := range rc.Announced {
		switch {
		case p.Bits() == 0 && !next.AllowDefault:
			problems = append(problems, fmt.Sprintf("the site announces %s and the new certificate does not allow a default route: stop announcing it first", p))
		case p.Bits() != 0 && !containedInAny(p, next.Prefixes):
			problems = append(problems, fmt.Sprintf("the site announces %s, outside the new certificate's prefixes (%s): stop announcing it first", p, joinPrefixes(next.Prefixes)))
		}
	}
	if len(next.Underlay) > 0 {
		for _, a := range rc.Endpoints {
			if !containsAddr(next.Underlay, a) {
				problems = append(problems, fmt.Sprintf("the site's address %s is outside the new certificate's underlay (%s)", a, joinPrefixes(next.Underlay)))
			}
		}
	}
	if running.Serial != nil && next.Serial.Cmp(running.Serial) == 0 {
		problems = append(problems, fmt.Sprintf("the new certificate is the running one (serial %x)", next.Serial))
	} else if next.NotBefore.Before(running.NotBefore) {
		problems = append(problems, fmt.Sprintf("the new certificate's not-before %s is earlier than the running certificate's %s: a renewal never rolls back",
			fmtTime(next.NotBefore), fmtTime(running.NotBefore)))
	}
	if len(problems) > 0 {
		return &RenewalError{Site: running.Site, Problems: slices.Clip(problems)}
	}
	return nil
}

// CheckIdentityKey checks that key is the private half of the identity key
// c certifies, so that a bundle with a mismatched key is refused before it
// is installed. The error never contains key material.
func CheckIdentityKey(c *Certificate, key ed25519.PrivateKey) error {
	if c == nil {
		return errors.New("trust: no certificate")
	}
	if len(key) != ed25519.PrivateKeySize {
		return errors.New("trust: identity key is not an Ed25519 private key")
	}
	if !c.IdentityKey.Equal(key.Public()) {
		return fmt.Errorf("trust: the identity key is not the one the certificate of site %q (serial %x) certifies", c.Site, c.Serial)
	}
	return nil
}
