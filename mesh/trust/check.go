package trust

import (
	"bytes"
	"cmp"
	"net/netip"
	"slices"

	"github.com/dcmesh/dcmesh/wg"
)

// CheckRecord decides whether a decoded record may be believed, rejecting at
// the first failure with a *RejectError. fromNode is the memberlist node
// name the record came from, or "" when it was relayed inside another node's
// push/pull state (then there is no direct sender to compare). highestSeq is
// the highest sequence number accepted so far for the record's site (0 if
// none).
//
// The checks, in this order (identity first, so that a record from an
// unauthorised sender is never judged on its content):
//
//  1. the certificate: signed by a pinned CA (ReasonUnknownCA), in date
//     within p.Skew (ReasonNotYetValid, ReasonExpired), not revoked by
//     the list of its CA in p.CRLs or p.CRL (ReasonRevoked);
//  2. record site == certificate site (ReasonNameMismatch);
//  3. fromNode, when given, == site (ReasonNodeMismatch);
//  4. site != p.LocalSite (ReasonSelf): nobody else speaks for us, and our
//     own record is never learned back;
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
//  9. no announced prefix overlapping p.LocalPrefixes (ReasonOverlapLocal);
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
// CheckRecord does not compare sites with each other; Resolve does.
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
	if fromNode != "" && fromNode != sr.Site {
		return reject(ReasonNodeMismatch, "record of site %q sent by node %q", sr.Site, truncate(fromNode, 64))
	}
	if sr.Site == p.LocalSite {
		return reject(ReasonSelf, "record claims to be the local site %q", sr.Site)
	}
	if sr.Seq <= highestSeq {
		return reject(ReasonReplay, "record of site %q has seq %d, already seen %d", sr.Site, sr.Seq, highestSeq)
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
			if conflicts(a, l) {
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

// Resolve settles the conflicts CheckRecord cannot see, between sites. Its
// input is the latest accepted record of each site; leaving records are
// ignored, and if a site has several records the highest Seq counts (then
// the greater encoding, so the choice never depends on order).
//
// Sites are ranked by certificate age (Certificate.OlderThan; site name as a
// last resort). Then:
//
//   - WireGuard keys: a site announcing a key (current or next) that an
//     older surviving site announces is dropped entirely (ReasonDuplicateKey;
//     Winner is the oldest such site): two peers with one key would steal
//     each other's traffic.
//   - Prefixes, among the surviving sites: for every pair of sites with
//     overlapping announced prefixes (see conflicts: default routes only
//     meet default routes), the younger site loses that whole announced
//     prefix (ReasonOverlapSite; Winner is the oldest site it overlaps).
//     This is pairwise: a prefix is lost to an older overlapping one even if
//     that one is itself lost to a third, still older site, so whether a
//     site keeps a prefix depends only on the older sites.
//
// prefixes has an entry for every surviving site (possibly empty: the site
// is still a peer), listing its kept prefixes in announcement order, valid
// ones only. conflicts is sorted by site, reason, prefix, winner. The result
// is the same for every order of records.
func Resolve(records []*SignedRecord) (prefixes map[string][]netip.Prefix, conflicts []Conflict) {
	latest := make(map[string]*SignedRecord)
	for _, r := range records {
		if r == nil || r.Cert == nil || r.Leaving {
			continue
		}
		if cur, ok := latest[r.Site]; !ok || r.Seq > cur.Seq || (r.Seq == cur.Seq && bytes.Compare(r.Raw, cur.Raw) > 0) {
			latest[r.Site] = r
		}
	}
	sites := make([]*SignedRecord, 0, len(latest))
	for _, r := range latest {
		sites = append(sites, r)
	}
	slices.SortFunc(sites, func(a, b *SignedRecord) int {
		switch {
		case a.Cert.OlderThan(b.Cert):
			return -1
		case b.Cert.OlderThan(a.Cert):
			return 1
		}
		return cmp.Compare(a.Site, b.Site)
	})

	// WireGuard keys, oldest site first.
	owner := make(map[wg.PublicKey]int) // key -> rank among sites
	alive := sites[:0:0]
	for i, r := range sites {
		winner := -1
		for _, k := range recordKeys(r) {
			if o, ok := owner[k]; ok && (winner < 0 || o < winner) {
				winner = o
			}
		}
		if winner >= 0 {
			conflicts = append(conflicts, Conflict{Site: r.Site, Winner: sites[winner].Site, Reason: ReasonDuplicateKey})
			continue
		}
		for _, k := range recordKeys(r) {
			owner[k] = i
		}
		alive = append(alive, r)
	}

	// Prefixes. lost maps (rank in alive, masked prefix) to the rank of the
	// oldest site that beats it.
	type key struct {
		rank int
		p    netip.Prefix
	}
	lost := make(map[key]int)
	beat := func(loser key, winner int) {
		if w, ok := lost[loser]; !ok || winner < w {
			lost[loser] = winner
		}
	}
	type item struct {
		p    netip.Prefix // masked
		last netip.Addr
		rank int
	}
	var items []item
	seen := make(map[key]bool)
	defaults := map[bool]int{} // IPv4? -> oldest rank announcing a default route
	for i, r := range alive {
		for _, p := range r.Prefixes {
			if !p.IsValid() {
				continue
			}
			m := p.Masked()
			k := key{i, m}
			if seen[k] {
				continue
			}
			seen[k] = true
			if m.Bits() == 0 {
				if w, ok := defaults[m.Addr().Is4()]; ok {
					beat(k, w) // alive is oldest first, so w is older
				} else {
					defaults[m.Addr().Is4()] = i
				}
				continue
			}
			items = append(items, item{p: m, last: lastAddr(m), rank: i})
		}
	}
	// Prefixes either nest or are disjoint. Sorted by first address, shorter
	// first, everything a prefix contains follows it directly, so each
	// overlapping pair is found once without comparing all pairs.
	slices.SortFunc(items, func(a, b item) int {
		if c := a.p.Addr().Compare(b.p.Addr()); c != 0 {
			return c
		}
		if c := cmp.Compare(a.p.Bits(), b.p.Bits()); c != 0 {
			return c
		}
		return cmp.Compare(a.rank, b.rank)
	})
	for i, a := range items {
		for _, b := range items[i+1:] {
			if b.p.Addr().Compare(a.last) > 0 {
				break
			}
			switch {
			case a.rank < b.rank:
				beat(key{b.rank, b.p}, a.rank)
			case b.rank < a.rank:
				beat(key{a.rank, a.p}, b.rank)
			}
		}
	}

	prefixes = make(map[string][]netip.Prefix, len(alive))
	for i, r := range alive {
		kept := []netip.Prefix{}
		reported := make(map[netip.Prefix]bool)
		for _, p := range r.Prefixes {
			if !p.IsValid() {
				continue
			}
			m := p.Masked()
			if w, ok := lost[key{i, m}]; ok {
				if !reported[m] {
					reported[m] = true
					conflicts = append(conflicts, Conflict{Site: r.Site, Prefix: p, Winner: alive[w].Site, Reason: ReasonOverlapSite})
				}
				continue
			}
			kept = append(kept, p)
		}
		prefixes[r.Site] = kept
	}
	slices.SortFunc(conflicts, func(a, b Conflict) int {
		return cmp.Or(
			cmp.Compare(a.Site, b.Site),
			cmp.Compare(a.Reason, b.Reason),
			a.Prefix.Addr().Compare(b.Prefix.Addr()),
			cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()),
			cmp.Compare(a.Winner, b.Winner),
		)
	})
	return prefixes, conflicts
}

// recordKeys returns the WireGuard keys a record announces.
func recordKeys(r *SignedRecord) []wg.PublicKey {
	keys := []wg.PublicKey{r.WGCurrent}
	if !r.WGNext.IsZero() && r.WGNext != r.WGCurrent {
		keys = append(keys, r.WGNext)
	}
	return keys
}

// lastAddr returns the highest address in a masked prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
