package mesh

import (
	"net/netip"

	"github.com/dcmesh/dcmesh/netconfig"
)

// routeLedger remembers the routes of ours the kernel held after each
// reconcile, so that a route a later reconcile has to put back exactly as
// it was is known for what it is: a repair of drift (someone ran `ip route
// del` or replaced it), not a change the agent wanted. It counts
// dcmesh_route_repairs_total; it changes nothing the agent does.
type routeLedger struct {
	seeded bool
	routes map[routeSlot]netconfig.Route
}

// routeSlot is what the kernel tells routes apart by: one route per slot.
type routeSlot struct {
	dst           netip.Prefix
	table, metric int
}

func slotOf(r netconfig.Route) routeSlot { return routeSlot{r.Dst, r.Table, r.Metric} }

// seed starts the ledger from the routes of ours the kernel holds.
func (l *routeLedger) seed(have []netconfig.Route) {
	l.seeded = true
	l.routes = make(map[routeSlot]netconfig.Route, len(have))
	for _, r := range have {
		l.routes[slotOf(r)] = r
	}
}

// note records what an Apply changed and returns the repairs among it: the
// routes added or replaced exactly as the ledger already had them. A route
// the agent itself changed (another link, a nexthop group) differs from
// the ledger's, and one it adds for the first time is not in it.
func (l *routeLedger) note(ch netconfig.Changes) []netconfig.Route {
	var repaired []netconfig.Route
	for _, set := range [][]netconfig.Route{ch.Added, ch.Replaced} {
		for _, r := range set {
			if old, ok := l.routes[slotOf(r)]; ok && old == r {
				repaired = append(repaired, r)
			}
			l.routes[slotOf(r)] = r
		}
	}
	for _, r := range ch.Gone {
		delete(l.routes, slotOf(r))
	}
	return repaired
}

// countRouteRepairs updates rt's ledger after an Apply of table and counts
// the repairs. The first call reads the kernel instead (one dump, at
// start): routes adopted from a previous run were never added by this one.
func (a *Agent) countRouteRepairs(rt *siteRuntime, table int, ch netconfig.Changes) {
	l := &rt.routeLedger
	if !l.seeded {
		if have, err := rt.net.OwnedRoutes(table); err == nil {
			l.seed(have)
		}
		return
	}
	for _, r := range l.note(ch) {
		kind := routeKindTunnel
		if r.Kind == netconfig.KindUnreachable {
			kind = routeKindFailClosed
		}
		if a.metrics != nil {
			a.metrics.routeRepairs.WithLabelValues(kind).Inc()
		}
	}
}
