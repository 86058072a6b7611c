package mesh

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/netconfig"
)

// Shadowed routes: the kernel route table is the contract with the site's
// fabric, and nothing learned from it may take a remote prefix away from
// the tunnel (a /25 from BGP inside a remote /24 sends that traffic out in
// cleartext). Every resync asks netconfig.Shadowing which routes of others
// do; status lists them per peer and prefix, health goes critical, and the
// agent logs each change once.

// shadowState is the last check.
type shadowState struct {
	net    netconfig.Config // the last applied kernel state (set by applied)
	routes []netconfig.ShadowRoute
	logged string // what was last logged, to log changes only
}

// checkShadowing looks for shadowing routes against the last applied
// state. A failed check keeps the previous answer.
func (a *Agent) checkShadowing(rt *siteRuntime) {
	if rt.net == nil || rt.shadow.net.Link == "" {
		return
	}
	routes, err := rt.net.Shadowing(rt.shadow.net)
	if err != nil {
		a.log.Warn("cannot check for routes shadowing the remote prefixes", "err", err)
		return
	}
	// A remote default route (a site certified with allow-default) is
	// meant to lose to every more specific route: that is what a default
	// is, not a shadow.
	routes = slices.DeleteFunc(routes, func(r netconfig.ShadowRoute) bool { return r.Remote.Bits() == 0 })
	rt.shadow.routes = routes
	var lines []string
	for _, r := range routes {
		lines = append(lines, r.String())
	}
	now := strings.Join(lines, "; ")
	if now == rt.shadow.logged {
		return
	}
	rt.shadow.logged = now
	if now == "" {
		a.log.Info("no route shadows a remote prefix any more")
		return
	}
	a.log.Error("routes of others shadow remote prefixes: that traffic does not enter the tunnel; filter the remote prefixes out of what the fabric installs here, or delete the routes", "routes", lines)
}

// shadowedFor returns the shadowing routes of the prefixes in allowed.
func (rt *siteRuntime) shadowedFor(allowed []string) []control.ShadowedRoute {
	out := []control.ShadowedRoute{}
	for _, r := range rt.shadow.routes {
		if !slices.ContainsFunc(allowed, func(s string) bool { p, err := netip.ParsePrefix(s); return err == nil && p.Masked() == r.Remote }) {
			continue
		}
		sr := control.ShadowedRoute{Prefix: r.Remote.String(), Route: strings.TrimSuffix(r.String(), " shadows "+r.Remote.String()), Dst: r.Dst.String(), Table: r.Table, Protocol: r.Protocol.String(), Dev: []string{}}
		for _, h := range r.Hops {
			if h.Link != "" {
				sr.Dev = append(sr.Dev, h.Link)
			}
		}
		out = append(out, sr)
	}
	return out
}

// withUplinksAndShadows adds a peer's uplinks and shadowed prefixes to its
// status.
func (rt *siteRuntime) withUplinksAndShadows(ps control.PeerStatus) control.PeerStatus {
	if ps.Source == control.SourceGossip && ps.Role == control.RoleCurrent {
		ps.Uplinks = rt.uplinkStatus(ps.Name())
	}
	ps.Shadowed = rt.shadowedFor(ps.AllowedIPs)
	return ps
}
