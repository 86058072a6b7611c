package trust

import "net/netip"

// CheckRecord decides whether a decoded record may be believed, rejecting at
// the first failure with a *RejectError. fromNode is the memberlist node
// name the record came from, or "" when it was relayed inside another node's
// push/pull state (then there is no direct sender to compare). highestSeq is
// the highest sequence number accepted so far from the record's gateway and
// identity key (0 if none; see ResolveGateways for why not per gateway).
//
// The checks, in this order (identity first, so that a record from an
// unauthorised sender is never judged on its content):
//
//  1. the certificate: signed by a pinned CA (ReasonUnknownCA), in date
//     within p.Skew (ReasonNotYetValid, ReasonExpired), not revoked by
//     the list of its CA in p.CRLs or p.CRL (ReasonRevoked);
//  2. record site == certificate site (ReasonNameMismatch);
//  3. fromNode, when given, == the gateway's node name, ID().String()
//     (ReasonNodeMismatch);
//  4. (site, gateway) != (p.LocalSite, p.LocalGateway) (ReasonSelf): nobody
//     else speaks for us, and our own record is never learned back;
//  5. Seq > highestSeq (ReasonReplay);
//
// and unless the record is a signed goodbye (Leaving: it only has to prove
// who it is and that it is new), for each announced prefix in turn:
//
//  6. canonical (no host bits) (ReasonPrefixNotInCert);
//  7. a /0 only with the certificate's AllowDefault (ReasonDefaultRoute);
//     other prefixes inside one of the certificate's prefixes
//     (ReasonPrefixNotInCert);
//
// then
//
//  8. every endpoint, and the gossip address, inside the certificate's
//     underlay ranges, if it has any (ReasonEndpoint);
//  9. no announced prefix overlapping p.LocalPrefixes (ReasonOverlapLocal),
//     except for a sibling;
//  10. no announced prefix overlapping p.Underlay or containing one of the
//     record's own endpoints (ReasonOverlapUnderlay): a route into the
//     tunnel for the tunnel's own underlay traffic would loop.
//
// Default routes (/0) only conflict with default routes: in 9 an announced
// /0 is refused only if p.LocalPrefixes has a /0 of the same family, 10 does
// not apply to it, and Resolve only compares it with other sites' /0. Every
// more specific route wins over a default route by longest-prefix match, so
// it takes nothing away from the local site or another site; otherwise no
// /0 could ever pass. Installing one is only safe if the data plane keeps
// the tunnel's own underlay traffic out of it (policy routing, as wg-quick
// does); the certificate's AllowDefault is the operator saying so. For the
// same reason /0 entries in p.LocalPrefixes and p.Underlay ("anywhere") are
// not compared with specific prefixes.
//
// A sibling — another gateway of the local site — is accepted like any
// other gateway, except that rule 9 does not apply to it: it announces the
// local site's prefixes by design. The caller keeps it to know its
// siblings (status, gossip roster, the fabric export) and must never make
// it a peer or route to it.
//
// CheckRecord does not compare sites with each other; ResolveGateways does.
func (p *Policy) CheckRecord(sr *SignedRecord, fromNode string, highestSeq uint64) error {
	if sr == nil || sr.Cert == nil {
		return reject(ReasonDecode, "no record")
	}
	c := sr.Cert
	if err := c.Verify(p.CAs, p.revocations(), p.Now, p.Skew); err != nil {
		return err
	}
	if sr.Site != c.Site {
		return reject(ReasonNameMismatch, "record for site %q carries the certificate of %q", truncate(sr.Site, 64), c.Site)
	}
	id := sr.ID()
	if fromNode != "" && fromNode != id.String() {
		return reject(ReasonNodeMismatch, "record of gateway %q sent by node %q", id, truncate(fromNode, 64))
	}
	if id == (GatewayID{Site: p.LocalSite, Gateway: p.LocalGateway}) {
		return reject(ReasonSelf, "record claims to be the local gateway %q", id)
	}
	sibling := sr.Site == p.LocalSite
	if sr.Seq <= highestSeq {
		return reject(ReasonReplay, "record of gateway %q has seq %d, already seen %d", id, sr.Seq, highestSeq)
	}
	if sr.Leaving {
		return nil
	}
	for _, a := range sr.Prefixes {
		if checkPrefix(a) != nil {
			return reject(ReasonPrefixNotInCert, "site %q announces %s, not a canonical prefix", sr.Site, a)
		}
		if a.Bits() == 0 {
			if !c.AllowDefault {
				return reject(ReasonDefaultRoute, "site %q announces %s without permission for a default route", sr.Site, a)
			}
			continue
		}
		if !containedInAny(a, c.Prefixes) {
			return reject(ReasonPrefixNotInCert, "site %q announces %s, outside its certificate's prefixes", sr.Site, a)
		}
	}
	if len(c.Underlay) > 0 {
		for _, e := range sr.Endpoints {
			if !containsAddr(c.Underlay, e.Addr()) {
				return reject(ReasonEndpoint, "site %q endpoint %s outside its certificate's underlay ranges", sr.Site, e)
			}
		}
		if sr.Gossip.IsValid() && !containsAddr(c.Underlay, sr.Gossip.Addr()) {
			return reject(ReasonEndpoint, "site %q gossip address %s outside its certificate's underlay ranges", sr.Site, sr.Gossip)
		}
	}
	for _, a := range sr.Prefixes {
		for _, l := range p.LocalPrefixes {
			if !sibling && conflicts(a, l) {
				return reject(ReasonOverlapLocal, "site %q announces %s, overlapping local %s", sr.Site, a, l)
			}
		}
	}
	for _, a := range sr.Prefixes {
		if a.Bits() == 0 {
			continue
		}
		for _, u := range p.Underlay {
			if conflicts(a, u) {
				return reject(ReasonOverlapUnderlay, "site %q announces %s, overlapping underlay %s", sr.Site, a, u)
			}
		}
		for _, e := range sr.Endpoints {
			if a.Contains(e.Addr()) {
				return reject(ReasonOverlapUnderlay, "site %q announces %s, containing its own endpoint %s", sr.Site, a, e)
			}
		}
	}
	return nil
}

// containedInAny reports whether prefix a lies inside one of ps.
func containedInAny(a netip.Prefix, ps []netip.Prefix) bool {
	for _, q := range ps {
		if q.Bits() <= a.Bits() && q.Contains(a.Addr()) {
			return true
		}
	}
	return false
}

func containsAddr(ps []netip.Prefix, a netip.Addr) bool {
	for _, q := range ps {
		if q.Contains(a) {
			return true
		}
	}
	return false
}

// conflicts is the overlap rule between two sites' prefixes: specific
// prefixes conflict when they overlap; a default route (/0) conflicts only
// with another default route of the same family, since longest-prefix match
// lets it coexist with anything more specific.
func conflicts(a, b netip.Prefix) bool {
	if !a.IsValid() || !b.IsValid() {
		return false
	}
	if a.Bits() == 0 || b.Bits() == 0 {
		return a.Bits() == 0 && b.Bits() == 0 && a.Addr().Is4() == b.Addr().Is4()
	}
	return a.Overlaps(b)
}
