package netconfig

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RouteProtocol marks every route dcmesh owns (rtm_protocol). 220 is 0xDC;
// it is outside the numbers iproute2 and the routing daemons register.
const RouteProtocol netlink.RouteProtocol = 220

// MainTable is the kernel's main routing table.
const MainTable = unix.RT_TABLE_MAIN

// RouteKind is what a route of ours does with matching traffic.
type RouteKind uint8

const (
	// KindTunnel sends traffic into the WireGuard link.
	KindTunnel RouteKind = iota + 1
	// KindUnreachable refuses traffic (ICMP unreachable, EHOSTUNREACH
	// locally): the fail-closed route.
	KindUnreachable
)

func (k RouteKind) String() string {
	switch k {
	case KindTunnel:
		return "dev"
	case KindUnreachable:
		return "unreachable"
	}
	return fmt.Sprintf("kind(%d)", k)
}

// Route is one route of ours, reduced to what dcmesh decides.
type Route struct {
	Dst    netip.Prefix
	Kind   RouteKind
	Link   int // interface index, for KindTunnel through one link
	Table  int
	Metric int
	// Nexthop is the nexthop group, for KindTunnel over a Group of two or
	// more links (Link is 0 then).
	Nexthop uint32
}

// key is what the kernel uses to tell routes apart: two routes with the same
// key cannot coexist, whatever their kind or link.
type routeKey struct {
	dst    netip.Prefix
	table  int
	metric int
}

func (r Route) key() routeKey { return routeKey{r.Dst, r.Table, r.Metric} }

func (r Route) String() string {
	s := ""
	switch {
	case r.Kind == KindUnreachable:
		s = "unreachable " + r.Dst.String()
	case r.Nexthop != 0:
		s = fmt.Sprintf("%s nhid %d", r.Dst, r.Nexthop)
	default:
		s = fmt.Sprintf("%s dev #%d", r.Dst, r.Link)
	}
	return fmt.Sprintf("%s proto %d metric %d table %d", s, RouteProtocol, r.Metric, r.Table)
}

// what is the short form of Changes.String: "dev 10.2.0.0/16",
// "nhid 10.2.0.0/16", "unreachable 10.2.0.0/16".
func (r Route) what() string {
	if r.Nexthop != 0 {
		return "nhid " + r.Dst.String()
	}
	return r.Kind.String() + " " + r.Dst.String()
}

func compareRoutes(a, b Route) int {
	if c := a.Dst.Addr().Compare(b.Dst.Addr()); c != 0 {
		return c
	}
	return cmp.Or(cmp.Compare(a.Dst.Bits(), b.Dst.Bits()), cmp.Compare(a.Table, b.Table),
		cmp.Compare(a.Metric, b.Metric), cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Link, b.Link), cmp.Compare(a.Nexthop, b.Nexthop))
}

// diffRoutes returns the routes to add (key absent), replace (key present
// with other attributes) and delete (ours, not wanted), each sorted.
func diffRoutes(have, want []Route) (add, replace, del []Route) {
	haveBy := make(map[routeKey]Route, len(have))
	for _, r := range have {
		haveBy[r.key()] = r
	}
	wantKeys := make(map[routeKey]bool, len(want))
	for _, w := range want {
		wantKeys[w.key()] = true
		h, ok := haveBy[w.key()]
		switch {
		case !ok:
			add = append(add, w)
		case h.Kind != w.Kind || (w.Kind == KindTunnel && (h.Link != w.Link || h.Nexthop != w.Nexthop)):
			replace = append(replace, w)
		}
	}
	for _, h := range have {
		if !wantKeys[h.key()] {
			del = append(del, h)
		}
	}
	slices.SortFunc(add, compareRoutes)
	slices.SortFunc(replace, compareRoutes)
	slices.SortFunc(del, compareRoutes)
	return add, replace, del
}

// desiredRoutes expands a Config into routes: a tunnel route per routed
// prefix, the groups' routes (worked out by planGroups), and an unreachable
// route, one metric worse, per fail-closed prefix.
func desiredRoutes(cfg Config, link int, groups []Route) []Route {
	var out []Route
	seen := map[routeKey]bool{}
	add := func(r Route) {
		if !seen[r.key()] {
			seen[r.key()] = true
			out = append(out, r)
		}
	}
	for _, p := range cfg.Routes {
		add(Route{Dst: p.Masked(), Kind: KindTunnel, Link: link, Table: cfg.table(), Metric: cfg.Metric})
	}
	for _, r := range groups {
		add(r)
	}
	for _, p := range cfg.FailClosed {
		add(Route{Dst: p.Masked(), Kind: KindUnreachable, Table: cfg.table(), Metric: cfg.failClosedMetric()})
	}
	return out
}

// toNetlink renders a Route for the kernel, with our protocol so that deletes
// can never match someone else's route.
func (r Route) toNetlink() *netlink.Route {
	nr := &netlink.Route{
		Dst:      prefixToIPNet(r.Dst),
		Table:    r.Table,
		Priority: r.Metric,
		Protocol: RouteProtocol,
		Family:   family(r.Dst.Addr()),
	}
	if r.Kind == KindUnreachable {
		nr.Type = unix.RTN_UNREACHABLE
	} else {
		nr.Type = unix.RTN_UNICAST
		nr.LinkIndex = r.Link
		nr.Scope = netlink.SCOPE_LINK
	}
	return nr
}

// nexthopRoute renders a route over a nexthop group.
func (r Route) nexthopRoute() NexthopRoute {
	return NexthopRoute{Dst: r.Dst, Table: r.Table, Metric: r.Metric, Protocol: RouteProtocol, Nexthop: r.Nexthop}
}

// fromNetlink reduces a kernel route of ours; ok is false for kinds dcmesh
// never creates (those are still ours by protocol and get deleted).
func fromNetlink(nr netlink.Route) Route {
	r := Route{Table: nr.Table, Metric: nr.Priority, Dst: ipNetToPrefix(nr.Dst, nr.Family)}
	switch nr.Type {
	case unix.RTN_UNREACHABLE:
		r.Kind = KindUnreachable
	case unix.RTN_UNICAST:
		r.Kind = KindTunnel
		r.Link = nr.LinkIndex
	}
	return r
}

func family(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	p = p.Masked()
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func ipNetToPrefix(n *net.IPNet, fam int) netip.Prefix {
	if n == nil { // a default route
		if fam == netlink.FAMILY_V6 {
			return netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}
