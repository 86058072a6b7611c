package trust

import (
	"bytes"
	"cmp"
	"net/netip"
	"slices"

	"github.com/dcmesh/dcmesh/wg"
)

// ResolveGateways settles the conflicts CheckRecord cannot see, between
// gateways. Its input is the accepted records (CheckRecord) of every
// gateway; leaving records are ignored. The result is the same for every
// order of records.
//
// Records are ranked by certificate age (Certificate.OlderThan; then site,
// gateway and bytes, so that the order is total). Then, in this order:
//
//   - Latest record: of the records of one gateway and one identity key,
//     the highest Seq counts (then the greater encoding). A certificate
//     renewed for the same identity key therefore takes over at once.
//   - One certificate per gateway: when records of one (site, gateway) come
//     with different identity keys — two machines configured as one
//     gateway, or a gateway re-keyed without revoking its old certificate —
//     the oldest certificate keeps the gateway and each other one loses it
//     entirely (ReasonDuplicateGateway; Serial names the loser). The
//     gateway that was there first stays, whichever record arrives first,
//     and a newly issued certificate cannot take over a running gateway.
//   - WireGuard keys: a gateway announcing a key (current or next) that an
//     older surviving gateway announces, of any site, is dropped entirely
//     (ReasonDuplicateKey; Winner is the oldest such gateway): two peers
//     with one key would steal each other's traffic.
//   - Prefixes, among the surviving gateways: for every pair of gateways of
//     different sites with overlapping announced prefixes (see conflicts:
//     default routes only meet default routes), the younger one loses that
//     whole announced prefix (ReasonOverlapSite; Winner is the oldest
//     gateway it overlaps). This is pairwise: a prefix is lost to an older
//     overlapping one even if that one is itself lost to a third, still
//     older gateway, so whether a gateway keeps a prefix depends only on
//     the older ones. Gateways of one site whose certificates name the
//     same issuer (subject and authority key identifier) share their
//     prefixes: that is what they are for. The same site name certified by
//     another CA is another site here, and the younger loses.
//
// prefixes has an entry for every surviving gateway (possibly empty: it is
// still a peer), listing its kept prefixes in announcement order, valid
// ones only. conflicts is sorted by site, gateway, reason, prefix, winner.
// A caller that gives its own site's other gateways (CheckRecord accepts
// siblings) gets entries for them too, settled like every other gateway so
// that its view agrees with the rest of the cluster's; it must not make
// them peers.
func ResolveGateways(records []*SignedRecord) (prefixes map[GatewayID][]netip.Prefix, conflicts []Conflict) {
	ranked := latestRecords(records)
	slots, dup := oneCertificatePerGateway(ranked)
	alive, dupKeys := uniqueWireGuardKeys(slots)
	prefixes, overlaps := settlePrefixes(alive)
	conflicts = append(append(dup, dupKeys...), overlaps...)
	slices.SortFunc(conflicts, func(a, b Conflict) int {
		return cmp.Or(
			cmp.Compare(a.Site, b.Site),
			cmp.Compare(a.Gateway, b.Gateway),
			cmp.Compare(a.Reason, b.Reason),
			a.Prefix.Addr().Compare(b.Prefix.Addr()),
			cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()),
			cmp.Compare(a.Winner, b.Winner),
			cmp.Compare(a.WinnerGateway, b.WinnerGateway),
			cmp.Compare(a.Serial, b.Serial),
		)
	})
	return prefixes, conflicts
}

// Resolve is ResolveGateways for a caller that knows one gateway per site:
// its map is keyed by site name and holds gateway 0 of each site only
// (conflicts are the same). It keeps mesh building until its store is
// keyed by GatewayID; then it goes.
func Resolve(records []*SignedRecord) (prefixes map[string][]netip.Prefix, conflicts []Conflict) {
	byGateway, conflicts := ResolveGateways(records)
	prefixes = make(map[string][]netip.Prefix, len(byGateway))
	for id, ps := range byGateway {
		if id.Gateway == 0 {
			prefixes[id.Site] = ps
		}
	}
	return prefixes, conflicts
}

// holder is one gateway with one identity key: the unit within which the
// highest sequence number counts.
type holder struct {
	id  GatewayID
	key string
}

// latestRecords returns the latest record of each holder, oldest
// certificate first.
func latestRecords(records []*SignedRecord) []*SignedRecord {
	latest := make(map[holder]*SignedRecord)
	for _, r := range records {
		if r == nil || r.Cert == nil || r.Leaving {
			continue
		}
		h := holder{r.ID(), string(r.Cert.IdentityKey)}
		if cur, ok := latest[h]; !ok || r.Seq > cur.Seq || (r.Seq == cur.Seq && bytes.Compare(r.Raw, cur.Raw) > 0) {
			latest[h] = r
		}
	}
	ranked := make([]*SignedRecord, 0, len(latest))
	for _, r := range latest {
		ranked = append(ranked, r)
	}
	// Distinct holders never compare equal: the same certificate bytes
	// mean the same identity key and gateway, and then the record's site
	// or bytes differ.
	slices.SortFunc(ranked, func(a, b *SignedRecord) int {
		switch {
		case a.Cert.OlderThan(b.Cert):
			return -1
		case b.Cert.OlderThan(a.Cert):
			return 1
		}
		return cmp.Or(
			cmp.Compare(a.Site, b.Site),
			cmp.Compare(a.Cert.Gateway, b.Cert.Gateway),
			bytes.Compare(a.Cert.Raw, b.Cert.Raw),
			bytes.Compare(a.Raw, b.Raw),
		)
	})
	return ranked
}

// oneCertificatePerGateway keeps the oldest holder of each gateway.
func oneCertificatePerGateway(ranked []*SignedRecord) (kept []*SignedRecord, lost []Conflict) {
	first := make(map[GatewayID]bool, len(ranked))
	for _, r := range ranked {
		id := r.ID()
		if first[id] {
			lost = append(lost, Conflict{Site: id.Site, Gateway: id.Gateway, Winner: id.Site, WinnerGateway: id.Gateway,
				Reason: ReasonDuplicateGateway, Serial: r.Cert.Serial.Text(16)})
			continue
		}
		first[id] = true
		kept = append(kept, r)
	}
	return kept, lost
}

// uniqueWireGuardKeys drops every gateway announcing a key an older
// surviving gateway announces.
func uniqueWireGuardKeys(ranked []*SignedRecord) (alive []*SignedRecord, lost []Conflict) {
	owner := make(map[wg.PublicKey]int) // key -> index in ranked
	for i, r := range ranked {
		winner := -1
		for _, k := range recordKeys(r) {
			if o, ok := owner[k]; ok && (winner < 0 || o < winner) {
				winner = o
			}
		}
		if winner >= 0 {
			w := ranked[winner].ID()
			lost = append(lost, Conflict{Site: r.Site, Gateway: r.ID().Gateway, Winner: w.Site, WinnerGateway: w.Gateway, Reason: ReasonDuplicateKey})
			continue
		}
		for _, k := range recordKeys(r) {
			owner[k] = i
		}
		alive = append(alive, r)
	}
	return alive, lost
}

// siteFamilies numbers the records by site and issuer: records with the
// same number are gateways of one site, certified by one CA, and never
// contest each other's prefixes.
func siteFamilies(ranked []*SignedRecord) []int {
	type family struct{ site, issuer, authorityKey string }
	ids := make(map[family]int)
	out := make([]int, len(ranked))
	for i, r := range ranked {
		f := family{r.Cert.Site, string(r.Cert.X509.RawIssuer), string(r.Cert.X509.AuthorityKeyId)}
		id, ok := ids[f]
		if !ok {
			id = len(ids)
			ids[f] = id
		}
		out[i] = id
	}
	return out
}

// prefixClaim is one announced prefix of the gateway of rank rank.
type prefixClaim struct {
	p    netip.Prefix // masked
	last netip.Addr
	rank int
}

// settlePrefixes applies the pairwise prefix rule to alive (oldest first).
func settlePrefixes(alive []*SignedRecord) (map[GatewayID][]netip.Prefix, []Conflict) {
	family := siteFamilies(alive)
	type key struct {
		rank int
		p    netip.Prefix
	}
	lost := make(map[key]int) // (rank, masked prefix) -> rank of the oldest gateway that beats it
	beat := func(loser prefixClaim, winner int) {
		k := key{loser.rank, loser.p}
		if w, ok := lost[k]; !ok || winner < w {
			lost[k] = winner
		}
	}
	claims, defaults := collectClaims(alive)
	// A default route loses to the oldest default route of its IP family
	// from another site; defaults is in rank order.
	for _, ds := range defaults {
		for _, d := range ds {
			for _, o := range ds {
				if o.rank >= d.rank {
					break
				}
				if family[o.rank] != family[d.rank] {
					beat(d, o.rank)
					break
				}
			}
		}
	}
	// Prefixes either nest or are disjoint. Sorted by first address, shorter
	// first, everything a prefix contains follows it directly, so each
	// overlapping pair is found once without comparing all pairs.
	slices.SortFunc(claims, func(a, b prefixClaim) int {
		return cmp.Or(a.p.Addr().Compare(b.p.Addr()), cmp.Compare(a.p.Bits(), b.p.Bits()), cmp.Compare(a.rank, b.rank))
	})
	for i, a := range claims {
		for _, b := range claims[i+1:] {
			if b.p.Addr().Compare(a.last) > 0 {
				break
			}
			switch {
			case family[a.rank] == family[b.rank]:
			case a.rank < b.rank:
				beat(b, a.rank)
			case b.rank < a.rank:
				beat(a, b.rank)
			}
		}
	}

	var conflicts []Conflict
	prefixes := make(map[GatewayID][]netip.Prefix, len(alive))
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
					wid := alive[w].ID()
					conflicts = append(conflicts, Conflict{Site: r.Site, Gateway: r.ID().Gateway, Prefix: p,
						Winner: wid.Site, WinnerGateway: wid.Gateway, Reason: ReasonOverlapSite})
				}
				continue
			}
			kept = append(kept, p)
		}
		prefixes[r.ID()] = kept
	}
	return prefixes, conflicts
}

// collectClaims lists each gateway's distinct valid prefixes: the specific
// ones, and the default routes by IP family (IPv4 first), in rank order.
func collectClaims(alive []*SignedRecord) (claims []prefixClaim, defaults [2][]prefixClaim) {
	for i, r := range alive {
		seen := make(map[netip.Prefix]bool, len(r.Prefixes))
		for _, p := range r.Prefixes {
			if !p.IsValid() {
				continue
			}
			m := p.Masked()
			if seen[m] {
				continue
			}
			seen[m] = true
			c := prefixClaim{p: m, last: lastAddr(m), rank: i}
			switch {
			case m.Bits() != 0:
				claims = append(claims, c)
			case m.Addr().Is4():
				defaults[0] = append(defaults[0], c)
			default:
				defaults[1] = append(defaults[1], c)
			}
		}
	}
	return claims, defaults
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
