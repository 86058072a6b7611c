package main

import (
	"fmt"
	"strings"

	"github.com/dcmesh/dcmesh/mesh/control"
)

// writeUplinksAndShadows writes, below the peer table, the peers with
// several uplinks (or any failover) and every shadowed prefix.
func writeUplinksAndShadows(b *strings.Builder, peers []control.PeerStatus) {
	for _, p := range peers {
		u := p.Uplinks
		if u == nil || (len(u.Endpoints) < 2 && u.Failovers == 0) {
			continue
		}
		pref := "preferred"
		if len(u.Endpoints) > 0 && u.InUse != u.Endpoints[0] {
			pref = "FALLBACK"
		}
		fmt.Fprintf(b, "uplinks of %s: on %s (%s, %s), %d failovers; endpoints %s\n", p.Name(), u.InUse, pref, u.Phase, u.Failovers, strings.Join(u.Endpoints, ", "))
	}
	for _, p := range peers {
		for _, s := range p.Shadowed {
			fmt.Fprintf(b, "SHADOWED %s of %s by %s\n", s.Prefix, p.Name(), s.Route)
		}
	}
}
