package trust

import (
	"fmt"
	"net/netip"
)

// Issued is what a CA remembers of a certificate it signed: the input of
// CheckIssue. Only live certificates (neither revoked nor expired) belong
// in that input.
type Issued struct {
	Site     string
	Gateway  uint8
	Prefixes []netip.Prefix
	Overlay  netip.Addr
}

// IssueConflict is CheckIssue's refusal: the request's Mine overlaps
// Theirs, a prefix or the overlay address (as a host prefix) of the
// certificate at Index in CheckIssue's input, which belongs to Site and
// Gateway. Sibling is set when that certificate is another gateway of the
// request's own site (only the overlay addresses may not meet then).
type IssueConflict struct {
	Index        int
	Site         string
	Gateway      uint8
	Mine, Theirs netip.Prefix
	Sibling      bool
}

func (e *IssueConflict) Error() string {
	if e.Sibling {
		return fmt.Sprintf("overlay address %s is already gateway %s's: each gateway has its own", e.Mine.Addr(), GatewayID{e.Site, e.Gateway})
	}
	return fmt.Sprintf("%s overlaps %s of site %s", e.Mine, e.Theirs, GatewayID{e.Site, e.Gateway})
}

// CheckIssue is the CA's overlap rule, applied before it signs req, against
// the live certificates it has issued (issued). The request's prefixes and
// overlay address must not overlap any prefix or overlay address of
// another site. The gateways of one site share the site's prefixes, so
// between them only the overlay addresses must differ. A certificate for
// the same site and gateway is the one being renewed or replaced and is
// not compared. The first conflict in issued order is returned as an
// *IssueConflict.
//
// Default routes are not prefixes here (certificates carry the separate
// AllowDefault permission), so every overlap counts, exactly as the CA
// has always refused them. At run time ResolveGateways applies the same
// rule to records, should two conflicting certificates exist anyway.
func CheckIssue(req IssueRequest, issued []Issued) error {
	mine := append([]netip.Prefix{hostPrefix(req.Overlay)}, req.Prefixes...)
	for i, e := range issued {
		if e.Site == req.Site && e.Gateway == req.Gateway {
			continue
		}
		conflict := &IssueConflict{Index: i, Site: e.Site, Gateway: e.Gateway}
		if e.Site == req.Site {
			if req.Overlay.IsValid() && req.Overlay == e.Overlay {
				conflict.Mine, conflict.Theirs, conflict.Sibling = mine[0], mine[0], true
				return conflict
			}
			continue
		}
		theirs := append([]netip.Prefix{hostPrefix(e.Overlay)}, e.Prefixes...)
		for _, m := range mine {
			for _, t := range theirs {
				if m.IsValid() && t.IsValid() && m.Overlaps(t) {
					conflict.Mine, conflict.Theirs = m, t
					return conflict
				}
			}
		}
	}
	return nil
}

// hostPrefix is a as a prefix of its own, or the zero Prefix.
func hostPrefix(a netip.Addr) netip.Prefix {
	if !a.IsValid() {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(a, a.BitLen())
}
