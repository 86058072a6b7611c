package main

import (
	"strings"
	"testing"
	"time"
)

// setDrained programs the routes the agent does when drained (every
// tunnel route at metric-1, the unreachable routes at metric+1) or back in
// service, and returns the time just before.
func (g *fabricGateway) setDrained(t testing.TB, on bool) time.Time {
	t.Helper()
	g.drained = on
	return g.setHealthy(t, fabricRemoteA, g.healthy[fabricRemoteA])
}

// A drained gateway (dcmesh drain) keeps its tunnel routes, at metric-1:
// the shipped FRR and BIRD configurations export them with the AS path
// prepended and GRACEFUL_SHUTDOWN, so the fabric moves to the other
// gateway without withdrawing anything; undrained, the fabric is back to
// ECMP over both with equal attributes.
func (l *fabricLab) testDrained(t *testing.T) {
	l.restoreHealthy(t)
	for _, g := range l.gws {
		l.drainAndBack(t, g)
	}
}

// drainAndBack drains g, checks that the fabric keeps its path degraded
// (never withdrawn: the withdraw variants withdraw only the unreachable
// state) and uses the other gateway, then undrains it and checks that the
// fabric is back to ECMP with equal attributes.
func (l *fabricLab) drainAndBack(t *testing.T, g *fabricGateway) {
	t.Helper()
	o := l.other(g)
	g.setDrained(t, true)
	for _, w := range []*routeWatch{l.watchA, l.watchB} {
		w.wait(t, 10*time.Second, g.name+" drained: fabric on "+o.name, func(r kernelRoute) bool { return r.isVia(o.addr) })
	}
	for _, prefix := range []string{fabricRemoteA, fabricRemoteB} {
		paths := l.fabFRR.bgpPaths(t, prefix)
		d, h := paths[g.addr], paths[o.addr]
		if d.ASPath.String != "65010 65010 65010 65010" || d.Community == nil || d.Community.String != "graceful-shutdown" ||
			d.Origin != "IGP" || d.LocPrf == nil || *d.LocPrf != 0 || d.best() || d.Multipath {
			t.Errorf("%s gateway drained, %s: %s; want it kept with as-path 65010 x4, GRACEFUL_SHUTDOWN, local-pref 0 at the fabric, not selected", g.name, prefix, d)
		}
		checkHealthyPath(t, o, h, h.Nexthops != nil)
		if !h.best() {
			t.Errorf("%s gateway (in service) is not the best path for %s: %s", o.name, prefix, h)
		}
	}
	routes := g.ns.Run(t, "ip", "route", "show", "proto", "220")
	for _, want := range []string{fabricRemoteA + " dev " + g.links[0] + " scope link metric 99", "unreachable " + fabricRemoteA + " metric 101"} {
		if !strings.Contains(routes, want) {
			t.Errorf("%s gateway drained: kernel lacks %q:\n%s", g.name, want, routes)
		}
	}
	g.setDrained(t, false)
	l.requireHealthy(t, 10*time.Second)
	for _, prefix := range []string{fabricRemoteA, fabricRemoteB} {
		paths := l.fabFRR.bgpPaths(t, prefix)
		for _, gw := range l.gws {
			p, ok := paths[gw.addr]
			checkHealthyPath(t, gw, p, ok)
		}
	}
}
