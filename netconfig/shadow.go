package netconfig

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RuleLister lists policy routing rules; *netlink.Handle, *Handle and
// netconfigtest.Fake have it.
type RuleLister interface {
	RuleList(family int) ([]netlink.Rule, error)
}

// ShadowRoute is a route of someone else's that takes traffic for a
// remote prefix away from dcmesh's routes, such as a /25 that the fabric's
// BGP installed inside a remote /24: that traffic would leave in cleartext
// or be dropped instead of entering the tunnel.
type ShadowRoute struct {
	Remote   netip.Prefix // the remote prefix it shadows
	Dst      netip.Prefix
	Table    int
	Metric   int
	Protocol netlink.RouteProtocol // its String() names it: "bgp", "zebra", "static", …
	Type     int                   // unix.RTN_*: unicast, blackhole, unreachable, prohibit
	Hops     []ShadowHop
}

// ShadowHop is where a shadowing route sends traffic.
type ShadowHop struct {
	Link    string // interface name, or "#index" if it has none
	Gateway netip.Addr
}

func (s ShadowRoute) String() string {
	var b strings.Builder
	if s.Type != unix.RTN_UNICAST {
		b.WriteString(routeTypeName(s.Type) + " ")
	}
	b.WriteString(s.Dst.String())
	for _, h := range s.Hops {
		if h.Gateway.IsValid() {
			b.WriteString(" via " + h.Gateway.String())
		}
		if h.Link != "" {
			b.WriteString(" dev " + h.Link)
		}
	}
	fmt.Fprintf(&b, " proto %s metric %d table %d shadows %s", s.Protocol, s.Metric, s.Table, s.Remote)
	return b.String()
}

func routeTypeName(t int) string {
	switch t {
	case unix.RTN_BLACKHOLE:
		return "blackhole"
	case unix.RTN_UNREACHABLE:
		return "unreachable"
	case unix.RTN_PROHIBIT:
		return "prohibit"
	}
	return fmt.Sprintf("type(%d)", t)
}

// Shadowing lists the routes, not dcmesh's, that take traffic for one of
// cfg's remote prefixes (Routes, Groups and FailClosed) away from the routes
// Apply makes. A route R shadows a remote prefix P when R's prefix equals P
// or lies inside it (a less specific route never wins over ours) and
//
//   - R is in cfg's table and more specific than P, or equal to P with a
//     metric no worse than the fail-closed route's (Metric+1; a worse one
//     never wins), or
//   - R is in a table that a policy rule consults before cfg's table (any
//     metric: that lookup ends before ours). Without rules (nl has no
//     RuleList, or no rule names the table) the main and local tables
//     count as consulted first.
//
// Not shadows: the kernel's local, broadcast, anycast and multicast routes
// (a host's own addresses), throw routes (the lookup goes on), and routes
// whose every hop is one of cfg's links (the traffic still enters
// WireGuard, whose AllowedIPs decide).
func (m *Manager) Shadowing(cfg Config) ([]ShadowRoute, error) {
	remote := slices.Concat(cfg.Routes, cfg.FailClosed)
	for _, g := range cfg.Groups {
		remote = append(remote, g.Routes...)
	}
	ownLinks := map[int]bool{}
	for _, name := range cfg.links() {
		if l, err := m.nl.LinkByName(name); err == nil {
			ownLinks[l.Attrs().Index] = true
		}
	}
	var out []ShadowRoute
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		var mine []netip.Prefix
		for _, p := range remote {
			if family(p.Addr()) == fam {
				mine = append(mine, p.Masked())
			}
		}
		if len(mine) == 0 {
			continue
		}
		before, err := m.tablesBefore(fam, cfg.table())
		if err != nil {
			return nil, err
		}
		for _, t := range append(before, cfg.table()) {
			nrs, err := m.nl.RouteListFiltered(fam, &netlink.Route{Table: t}, netlink.RT_FILTER_TABLE)
			if err != nil {
				return nil, fmt.Errorf("list routes in table %d: %w", t, err)
			}
			for _, nr := range nrs {
				if s, ok := m.shadow(nr, mine, t == cfg.table(), cfg.failClosedMetric(), ownLinks); ok {
					out = append(out, s)
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b ShadowRoute) int {
		return cmp.Or(a.Dst.Addr().Compare(b.Dst.Addr()), cmp.Compare(a.Dst.Bits(), b.Dst.Bits()), cmp.Compare(a.Table, b.Table), cmp.Compare(a.Metric, b.Metric))
	})
	return out, nil
}

// shadow decides whether nr shadows one of remote (the most specific one
// it lies in is reported).
func (m *Manager) shadow(nr netlink.Route, remote []netip.Prefix, sameTable bool, worstMetric int, ownLinks map[int]bool) (ShadowRoute, bool) {
	switch nr.Type {
	case unix.RTN_LOCAL, unix.RTN_BROADCAST, unix.RTN_ANYCAST, unix.RTN_MULTICAST, unix.RTN_THROW:
		return ShadowRoute{}, false
	}
	if nr.Protocol == RouteProtocol {
		return ShadowRoute{}, false
	}
	dst := ipNetToPrefix(nr.Dst, nr.Family).Masked()
	var hit netip.Prefix
	for _, p := range remote {
		if p.Bits() <= dst.Bits() && p.Contains(dst.Addr()) && (!hit.IsValid() || p.Bits() > hit.Bits()) {
			hit = p
		}
	}
	// In our own table an equal prefix loses on metric; a more specific
	// one wins whatever its metric.
	if !hit.IsValid() || (sameTable && hit == dst && nr.Priority > worstMetric) {
		return ShadowRoute{}, false
	}
	s := ShadowRoute{Remote: hit, Dst: dst, Table: nr.Table, Metric: nr.Priority, Protocol: nr.Protocol, Type: nr.Type}
	hops := []*netlink.NexthopInfo{{LinkIndex: nr.LinkIndex, Gw: nr.Gw}}
	if len(nr.MultiPath) > 0 {
		hops = nr.MultiPath
	}
	allOurs := nr.Type == unix.RTN_UNICAST
	for _, h := range hops {
		hop := ShadowHop{}
		hop.Gateway, _ = netip.AddrFromSlice(h.Gw)
		hop.Gateway = hop.Gateway.Unmap()
		if h.LinkIndex != 0 {
			hop.Link = fmt.Sprintf("#%d", h.LinkIndex)
			if l, err := m.nl.LinkByIndex(h.LinkIndex); err == nil {
				hop.Link = l.Attrs().Name
			}
		}
		allOurs = allOurs && ownLinks[h.LinkIndex]
		s.Hops = append(s.Hops, hop)
	}
	return s, !allOurs
}

// tablesBefore returns the tables that policy rules of family consult
// before table: those of lookup rules with a lower priority than the first
// rule naming table.
func (m *Manager) tablesBefore(fam, table int) ([]int, error) {
	fallback := []int{unix.RT_TABLE_LOCAL}
	if table != MainTable {
		fallback = append(fallback, MainTable)
	}
	rl, ok := m.nl.(RuleLister)
	if !ok {
		return fallback, nil
	}
	rules, err := rl.RuleList(fam)
	if err != nil {
		return nil, fmt.Errorf("list policy rules: %w", err)
	}
	slices.SortStableFunc(rules, func(a, b netlink.Rule) int { return cmp.Compare(a.Priority, b.Priority) })
	var out []int
	for _, r := range rules {
		if r.Table == table {
			return out, nil
		}
		if r.Table != 0 && (r.Type == unix.FR_ACT_TO_TBL || r.Type == 0) && !slices.Contains(out, r.Table) {
			out = append(out, r.Table)
		}
	}
	return fallback, nil
}
