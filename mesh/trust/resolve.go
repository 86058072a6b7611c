package trust

import (
	"bytes"
	"cmp"
	"crypto/x509"
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
//   - Prefixes, among the surviving gateways. The gateways of one site
//     whose certificates name the same issuer (subject and authority key
//     identifier) hold the site's prefixes together: that is what they are
//     for. The site's claim on an announced prefix is as old as the oldest
//     of its gateways announcing that prefix or a specific prefix
//     containing it, so a gateway added later claims its site's space as
//     early as the site did, but nothing new. (The same site name certified
//     by another CA is another site here.) For every pair of claims of
//     different sites on overlapping prefixes (see conflicts: default
//     routes only meet default routes), the younger claim is lost: every
//     gateway of that site loses that whole announced prefix
//     (ReasonOverlapSite; Winner is the gateway behind the oldest claim it
//     overlaps). This is pairwise: a claim is lost to an older overlapping
//     one even if that one is itself lost to a third, still older claim, so
//     whether a site keeps a prefix depends only on the older claims.
//
// won has an entry for every surviving gateway: the record that counts
// (one of the input pointers; with several holders, the oldest
// certificate's) and its kept prefixes in announcement order, valid ones
// only (possibly none: the gateway is still a peer). A caller builds its
// peers from won, never from its input: the input may hold a losing
// holder's record for the same gateway. conflicts is sorted by site,
// gateway, reason, prefix, winner.
// A caller that gives its own site's other gateways (CheckRecord accepts
// siblings) gets entries for them too, settled like every other gateway so
// that its view agrees with the rest of the cluster's; it must not make
// them peers.
func ResolveGateways(records []*SignedRecord) (won map[GatewayID]Resolved, conflicts []Conflict) {
	ranked := latestRecords(records)
	slots, dup := oneCertificatePerGateway(ranked)
	alive, dupKeys := uniqueWireGuardKeys(slots)
	won, overlaps := settlePrefixes(alive)
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
	return won, conflicts
}

// Resolved is a gateway that survives ResolveGateways: the record that
// counts for it and the prefixes it keeps.
type Resolved struct {
	Record   *SignedRecord
	Prefixes []netip.Prefix
}

// Resolve is ResolveGateways for a caller that knows one gateway per site:
// its map is keyed by site name and holds gateway 0 of each site only
// (conflicts are the same). It keeps mesh building until its store is
// keyed by GatewayID; then it goes.
func Resolve(records []*SignedRecord) (prefixes map[string][]netip.Prefix, conflicts []Conflict) {
	won, conflicts := ResolveGateways(records)
	prefixes = make(map[string][]netip.Prefix, len(won))
	for id, r := range won {
		if id.Gateway == 0 {
			prefixes[id.Site] = r.Prefixes
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
	type family struct {
		id  int
		rep *x509.Certificate
	}
	bySite := make(map[string][]family, len(ranked))
	out := make([]int, len(ranked))
	n := 0
	for i, r := range ranked {
		x := r.Cert.X509
		fs := bySite[r.Cert.Site]
		j := slices.IndexFunc(fs, func(f family) bool {
			return bytes.Equal(f.rep.RawIssuer, x.RawIssuer) && bytes.Equal(f.rep.AuthorityKeyId, x.AuthorityKeyId)
		})
		if j < 0 {
			bySite[r.Cert.Site] = append(fs, family{n, x})
			out[i], n = n, n+1
		} else {
			out[i] = fs[j].id
		}
	}
	return out
}

// claim is a site's claim on a prefix: family fam announces p (masked),
// and rank is that of the oldest gateway of the family announcing p or a
// specific prefix containing it: since when the site has claimed that
// space.
type claim struct {
	fam  int
	p    netip.Prefix
	last netip.Addr
	rank int
}

type famPrefix struct {
	fam int
	p   netip.Prefix
}

// settlePrefixes applies the pairwise prefix rule to alive (oldest first).
func settlePrefixes(alive []*SignedRecord) (map[GatewayID]Resolved, []Conflict) {
	family := siteFamilies(alive)
	specific, defaults := siteClaims(alive, family)
	lost := contest(specific, defaults)

	var conflicts []Conflict
	won := make(map[GatewayID]Resolved, len(alive))
	for i, r := range alive {
		kept := make([]netip.Prefix, 0, len(r.Prefixes))
		var reported map[netip.Prefix]bool // made on the first loss: most gateways lose nothing
		for _, p := range r.Prefixes {
			if !p.IsValid() {
				continue
			}
			m := p.Masked()
			if w, ok := lost[famPrefix{family[i], m}]; ok {
				if !reported[m] {
					if reported == nil {
						reported = make(map[netip.Prefix]bool)
					}
					reported[m] = true
					wid := alive[w].ID()
					conflicts = append(conflicts, Conflict{Site: r.Site, Gateway: r.ID().Gateway, Prefix: p,
						Winner: wid.Site, WinnerGateway: wid.Gateway, Reason: ReasonOverlapSite})
				}
				continue
			}
			kept = append(kept, p)
		}
		won[r.ID()] = Resolved{Record: r, Prefixes: kept}
	}
	return won, conflicts
}

// siteClaims returns each family's claims: one per distinct specific
// prefix its gateways announce, and one per default route (/0) of each IP
// family. A default route contains nothing here but default routes, as in
// conflicts: announcing 0.0.0.0/0 claims no specific space.
func siteClaims(alive []*SignedRecord, family []int) (specific, defaults []claim) {
	var all []claim
	type rankPrefix struct {
		rank int
		p    netip.Prefix
	}
	seen := make(map[rankPrefix]bool)
	for i, r := range alive {
		for _, p := range r.Prefixes {
			if !p.IsValid() || seen[rankPrefix{i, p.Masked()}] {
				continue
			}
			m := p.Masked()
			seen[rankPrefix{i, m}] = true
			c := claim{fam: family[i], p: m, last: lastAddr(m), rank: i}
			if m.Bits() == 0 {
				defaults = append(defaults, c)
			} else {
				all = append(all, c)
			}
		}
	}
	// Per family, by first address, shorter first, oldest first: every
	// prefix of the family containing a claim precedes it, and the stack
	// holds exactly those (prefixes nest or are disjoint).
	slices.SortFunc(all, func(a, b claim) int {
		return cmp.Or(cmp.Compare(a.fam, b.fam), a.p.Addr().Compare(b.p.Addr()), cmp.Compare(a.p.Bits(), b.p.Bits()), cmp.Compare(a.rank, b.rank))
	})
	var stack []claim // containers of the current claim, rank = oldest along the chain
	for i, c := range all {
		if i > 0 && c.fam != all[i-1].fam {
			stack = stack[:0]
		}
		for len(stack) > 0 && stack[len(stack)-1].last.Less(c.p.Addr()) {
			stack = stack[:len(stack)-1]
		}
		if n := len(stack); n > 0 {
			if stack[n-1].p == c.p {
				continue // another gateway announcing the same prefix: the first was older
			}
			c.rank = min(c.rank, stack[n-1].rank)
		}
		specific = append(specific, c)
		stack = append(stack, c)
	}
	// Default routes: a family's claim is its oldest gateway announcing one.
	slices.SortFunc(defaults, func(a, b claim) int { return cmp.Compare(a.rank, b.rank) })
	type famIPv4 struct {
		fam int
		v4  bool
	}
	first := make(map[famIPv4]bool)
	defaults = slices.DeleteFunc(defaults, func(c claim) bool {
		k := famIPv4{c.fam, c.p.Addr().Is4()}
		dup := first[k]
		first[k] = true
		return dup
	})
	return specific, defaults
}

// contest returns the claims lost to an older overlapping claim of another
// family, with the rank of the oldest such claim.
func contest(specific, defaults []claim) map[famPrefix]int {
	lost := make(map[famPrefix]int)
	beat := func(loser claim, winner int) {
		k := famPrefix{loser.fam, loser.p}
		if w, ok := lost[k]; !ok || winner < w {
			lost[k] = winner
		}
	}
	// One default route claim per family and IP family, oldest first: the
	// oldest of each IP family beats all the others.
	oldest := map[bool]int{}
	for _, d := range defaults {
		if w, ok := oldest[d.p.Addr().Is4()]; ok {
			beat(d, w)
		} else {
			oldest[d.p.Addr().Is4()] = d.rank
		}
	}
	// Sorted by first address, shorter first, everything a prefix contains
	// follows it directly, so each overlapping pair is found once without
	// comparing all pairs.
	slices.SortFunc(specific, func(a, b claim) int {
		return cmp.Or(a.p.Addr().Compare(b.p.Addr()), cmp.Compare(a.p.Bits(), b.p.Bits()), cmp.Compare(a.rank, b.rank))
	})
	for i, a := range specific {
		for _, b := range specific[i+1:] {
			if b.p.Addr().Compare(a.last) > 0 {
				break
			}
			switch {
			case a.fam == b.fam:
			case a.rank < b.rank:
				beat(b, a.rank)
			default:
				beat(a, b.rank)
			}
		}
	}
	return lost
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
