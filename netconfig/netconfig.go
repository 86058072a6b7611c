package netconfig

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Config is the desired kernel state for one site.
type Config struct {
	// Link is the WireGuard interface name.
	Link string
	// MTU of the link (and of ExtraLinks); 0 leaves it alone.
	MTU int
	// Addresses are the overlay addresses on the link; others on it go.
	Addresses []netip.Prefix
	// Table holds our routes; 0 means the main table.
	Table int
	// Metric of tunnel routes. Fail-closed routes use Metric+1: worse than
	// the tunnel, better than anything a later hop would add.
	Metric int
	// FailClosedMetric, when not 0, is the fail-closed routes' metric
	// instead of Metric+1: a drained gateway moves its tunnel routes to a
	// Metric one better while the fail-closed routes stay where they were.
	// It must be worse (larger) than Metric.
	FailClosedMetric int
	// Routes are sent into the link.
	Routes []netip.Prefix
	// FailClosed get an unreachable route each. Normally every prefix in
	// Routes and in Groups is also here.
	FailClosed []netip.Prefix

	// ExtraLinks are further WireGuard interfaces of ours (a gateway has one
	// per remote gateway slot): each gets MTU and is set up, like Link; their
	// addresses are left alone.
	ExtraLinks []string
	// Groups send prefixes over several links at once.
	Groups []Group
	// LinkSysctls are set on Link and every ExtraLink at each Apply (a link
	// made anew starts from the kernel's defaults); see GatewayLinkSysctls.
	LinkSysctls []LinkSysctl
}

// Group sends prefixes over a weighted set of links. With two or more
// members that is one route per prefix over a kernel nexthop group (nhid),
// which shrinks when a member's link goes away instead of losing the route;
// with one member a plain route through its link, exactly like Routes; with
// none no tunnel route at all, so the fail-closed route answers.
type Group struct {
	// Name identifies the group (the remote site). Its nexthop ids derive
	// from Table and Name, so they are the same on every gateway and after
	// a restart.
	Name string
	// Members are the links to use now. netconfig spreads traffic over
	// exactly these: the caller leaves out the unhealthy, the drained and
	// the standby (weight 0) members, and passes the standby ones, with a
	// weight of 1, when nothing else is left.
	Members []Member
	// Routes are the prefixes sent over the group.
	Routes []netip.Prefix
}

// Member is one link of a Group.
type Member struct {
	// Link is Config.Link or one of Config.ExtraLinks.
	Link string
	// Weight, 1-256, is the member's share of flows relative to the others.
	Weight int
}

func (c Config) table() int {
	if c.Table == 0 {
		return MainTable
	}
	return c.Table
}

func (c Config) failClosedMetric() int {
	if c.FailClosedMetric != 0 {
		return c.FailClosedMetric
	}
	return c.Metric + 1
}

// links returns Link and ExtraLinks.
func (c Config) links() []string { return append([]string{c.Link}, c.ExtraLinks...) }

// validate rejects what the caller got wrong, before anything changes.
func (c Config) validate() error {
	var errs []error
	ours := map[string]bool{c.Link: true}
	for _, l := range c.ExtraLinks {
		if l == "" || ours[l] {
			errs = append(errs, fmt.Errorf("netconfig: ExtraLinks: %q is empty or named twice (with Link)", l))
		}
		ours[l] = true
	}
	routed := map[netip.Prefix]string{}
	for _, p := range c.Routes {
		routed[p.Masked()] = "Routes"
	}
	names := map[string]bool{}
	for _, g := range c.Groups {
		if g.Name == "" || names[g.Name] {
			errs = append(errs, fmt.Errorf("netconfig: group %q: name empty or used twice", g.Name))
		}
		names[g.Name] = true
		seen := map[string]bool{}
		for _, mb := range g.Members {
			switch {
			case !ours[mb.Link]:
				errs = append(errs, fmt.Errorf("netconfig: group %q: member %q is neither Link nor one of ExtraLinks", g.Name, mb.Link))
			case seen[mb.Link]:
				errs = append(errs, fmt.Errorf("netconfig: group %q: member %q listed twice", g.Name, mb.Link))
			case mb.Weight < 1 || mb.Weight > 256:
				errs = append(errs, fmt.Errorf("netconfig: group %q: member %q has weight %d; use 1-256 (leave standby members out)", g.Name, mb.Link, mb.Weight))
			}
			seen[mb.Link] = true
		}
		for _, p := range g.Routes {
			if by, dup := routed[p.Masked()]; dup && by != "group "+g.Name {
				errs = append(errs, fmt.Errorf("netconfig: group %q: prefix %s is also in %s", g.Name, p, by))
			}
			routed[p.Masked()] = "group " + g.Name
		}
	}
	if c.FailClosedMetric != 0 && c.FailClosedMetric <= c.Metric {
		errs = append(errs, fmt.Errorf("netconfig: FailClosedMetric %d is not worse than Metric %d: the fail-closed routes would win over the tunnel", c.FailClosedMetric, c.Metric))
	}
	for _, s := range c.LinkSysctls {
		if err := s.validate(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Netlink is the part of *netlink.Handle that Manager uses;
// netconfigtest.Fake implements it in memory. Groups need NexthopNetlink
// too, LinkSysctls need Sysctls, and Shadowing looks at policy rules
// through RuleLister when nl has it: *Handle has all of them.
type Netlink interface {
	LinkByName(name string) (netlink.Link, error)
	LinkByIndex(index int) (netlink.Link, error)
	LinkSetMTU(link netlink.Link, mtu int) error
	LinkSetUp(link netlink.Link) error
	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
	AddrReplace(link netlink.Link, addr *netlink.Addr) error
	AddrDel(link netlink.Link, addr *netlink.Addr) error
	RouteListFiltered(family int, filter *netlink.Route, filterMask uint64) ([]netlink.Route, error)
	RouteAdd(route *netlink.Route) error
	RouteReplace(route *netlink.Route) error
	RouteDel(route *netlink.Route) error
	RouteGet(destination net.IP) ([]netlink.Route, error)
}

// Manager applies Configs. It keeps no state between calls but what the
// kernel can do: every Apply compares with what the kernel reports, so
// drift is repaired and a restarted agent sweeps what a previous one left.
type Manager struct {
	nl  Netlink
	nh  NexthopNetlink // nil: nl has no nexthop objects
	sys Sysctls        // nil: nl has no sysctls
	log *slog.Logger

	mu         sync.Mutex
	groupType  GroupType
	noNexthops bool // the kernel said so
}

// New returns a Manager over nl: normally a *Handle (OpenHandle), which
// can do everything; a plain *netlink.Handle does everything but Groups of
// two or more members and LinkSysctls.
func New(nl Netlink, log *slog.Logger) *Manager {
	if log == nil {
		log = slog.Default()
	}
	m := &Manager{nl: nl, log: log}
	m.nh, _ = nl.(NexthopNetlink)
	m.sys, _ = nl.(Sysctls)
	return m
}

// Changes lists what Apply changed.
type Changes struct {
	MTU                   bool
	LinkUp                bool
	AddrsAdded, AddrsGone []netip.Prefix
	Added, Replaced, Gone []Route
	// ExtraLinks that were given their MTU or set up.
	ExtraLinks                                    []string
	Sysctls                                       []SysctlChange
	NexthopsAdded, NexthopsReplaced, NexthopsGone []Nexthop
}

// Empty reports whether nothing changed.
func (c Changes) Empty() bool {
	return !c.MTU && !c.LinkUp && len(c.AddrsAdded)+len(c.AddrsGone)+len(c.Added)+len(c.Replaced)+len(c.Gone)+
		len(c.ExtraLinks)+len(c.Sysctls)+len(c.NexthopsAdded)+len(c.NexthopsReplaced)+len(c.NexthopsGone) == 0
}

// ErrRouteConflict means a route that dcmesh does not own occupies the place
// (same prefix, table and metric) of one we need.
var ErrRouteConflict = errors.New("route conflicts with a route dcmesh does not own")

// Apply moves the links, our nexthop objects and our routes to cfg: adds
// before deletes, so a prefix is never left without either its tunnel route
// or its fail-closed route, and a group changes members in one step. It
// carries on past individual failures and returns them joined; a Config
// that contradicts itself changes nothing.
func (m *Manager) Apply(cfg Config) (Changes, error) {
	var ch Changes
	if err := cfg.validate(); err != nil {
		return ch, err
	}
	links, errs, err := m.applyLinks(cfg, &ch)
	if err != nil {
		return ch, err
	}
	nhs, err := m.listNexthops()
	if err != nil {
		return ch, errors.Join(append(errs, err)...)
	}
	have, err := m.ownedRoutes(cfg.table(), nhs)
	if err != nil {
		return ch, errors.Join(append(errs, err)...)
	}
	st := m.applyGroups(cfg, links, nhs, have, &ch, &errs)
	want := desiredRoutes(cfg, links[cfg.Link].index, st.routes)
	kept := m.applyRoutes(have, want, &ch, &errs)
	m.deleteNexthops(st, nhs, kept, &ch, &errs)
	m.deleteFence(nhs, &ch, &errs)
	return ch, errors.Join(errs...)
}

// applyRoutes adds, replaces and deletes routes; it returns the nexthop
// ids that routes it failed to move still use.
func (m *Manager) applyRoutes(have, want []Route, ch *Changes, errs *[]error) map[uint32]bool {
	kept := map[uint32]bool{}
	haveBy := map[routeKey]Route{}
	for _, r := range have {
		haveBy[r.key()] = r
	}
	add, replace, del := diffRoutes(have, want)
	for _, r := range add {
		if err := m.routeAdd(r); err != nil {
			if errors.Is(err, unix.EEXIST) {
				err = fmt.Errorf("%w: %s already has a route with metric %d in table %d (find it with `ip route show table %d %s`; remove it or set routes.metric)", ErrRouteConflict, r.Dst, r.Metric, r.Table, r.Table, r.Dst)
			}
			*errs = append(*errs, fmt.Errorf("add route %s: %w", r, err))
			continue
		}
		ch.Added = append(ch.Added, r)
	}
	for _, r := range replace {
		if err := m.routeReplace(r); err != nil {
			kept[haveBy[r.key()].Nexthop] = true
			*errs = append(*errs, fmt.Errorf("replace route %s: %w", r, err))
			continue
		}
		ch.Replaced = append(ch.Replaced, r)
	}
	for _, r := range del {
		if err := m.nl.RouteDel(r.toNetlink()); err != nil && !errors.Is(err, unix.ESRCH) {
			kept[r.Nexthop] = true
			*errs = append(*errs, fmt.Errorf("delete route %s: %w", r, err))
			continue
		}
		ch.Gone = append(ch.Gone, r)
	}
	delete(kept, 0)
	return kept
}

func (m *Manager) routeAdd(r Route) error {
	if r.Nexthop != 0 {
		return m.nh.RouteAddNexthop(r.nexthopRoute())
	}
	return m.nl.RouteAdd(r.toNetlink())
}

func (m *Manager) routeReplace(r Route) error {
	if r.Nexthop != 0 {
		return m.nh.RouteReplaceNexthop(r.nexthopRoute())
	}
	return m.nl.RouteReplace(r.toNetlink())
}

// OwnedRoutes lists the routes of ours in table (0: main), IPv4 and IPv6.
func (m *Manager) OwnedRoutes(table int) ([]Route, error) {
	if table == 0 {
		table = MainTable
	}
	nhs, err := m.listNexthops()
	if err != nil {
		return nil, err
	}
	return m.ownedRoutes(table, nhs)
}

// ownedRoutes lists our routes in table; those over a nexthop object get
// its id from a second dump, which netlink.Route cannot carry. With no
// nexthop objects in the kernel (nhs empty) no route can have one.
func (m *Manager) ownedRoutes(table int, nhs []Nexthop) ([]Route, error) {
	var out []Route
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		nrs, err := m.nl.RouteListFiltered(fam, &netlink.Route{Table: table, Protocol: RouteProtocol},
			netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			return nil, fmt.Errorf("list routes in table %d: %w", table, err)
		}
		for _, nr := range nrs {
			out = append(out, fromNetlink(nr))
		}
	}
	if m.nh != nil && len(nhs) > 0 {
		nrs, err := m.nh.RouteListNexthop(table)
		if err != nil {
			return nil, fmt.Errorf("list routes in table %d: %w", table, err)
		}
		byKey := map[routeKey]uint32{}
		for _, r := range nrs {
			if r.Protocol == RouteProtocol {
				byKey[routeKey{r.Dst.Masked(), r.Table, r.Metric}] = r.Nexthop
			}
		}
		for i, r := range out {
			if id, ok := byKey[r.key()]; ok && r.Kind == KindTunnel {
				out[i].Nexthop, out[i].Link = id, 0
			}
		}
	}
	slices.SortFunc(out, compareRoutes)
	return out, nil
}

// Purge deletes every route of ours in table, fail-closed routes included,
// then our nexthop objects for table. It is the explicit "remove
// everything" of `dcmesh down --purge`; it returns the routes it removed.
func (m *Manager) Purge(table int) ([]Route, error) {
	if table == 0 {
		table = MainTable
	}
	nhs, err := m.listNexthops()
	if err != nil {
		return nil, err
	}
	have, err := m.ownedRoutes(table, nhs)
	if err != nil {
		return nil, err
	}
	var gone []Route
	var errs []error
	for _, r := range have {
		if err := m.nl.RouteDel(r.toNetlink()); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %s: %w", r, err))
			continue
		}
		gone = append(gone, r)
	}
	var ch Changes
	m.deleteNexthops(nexthopState{del: append(ownedNexthops(nhs, table), legacyNexthops(nhs, table)...)}, nhs, nil, &ch, &errs)
	m.deleteFence(nhs, &ch, &errs)
	return gone, errors.Join(errs...)
}

// deleteFence deletes the fence (see fenceID) once no other object of
// ours, of any table, is left: those in nhs, less ch's gone, plus ch's
// added. (The next object of ours makes it anew, first.)
func (m *Manager) deleteFence(nhs []Nexthop, ch *Changes, errs *[]error) {
	fence := false
	for _, nh := range slices.Concat(nhs, ch.NexthopsAdded) {
		if nh.Protocol != RouteProtocol || slices.ContainsFunc(ch.NexthopsGone, func(g Nexthop) bool { return g.ID == nh.ID }) {
			continue
		}
		switch {
		case nh.ID == fenceID:
			fence = nh.Blackhole
		case nh.ID < fenceID, nh.ID&^(fenceID-1) == legacyIDBase:
			return // still in use
		}
	}
	if !fence {
		return
	}
	if err := m.nh.NexthopDel(fenceID); err != nil && !errors.Is(err, unix.ENOENT) {
		*errs = append(*errs, fmt.Errorf("delete nexthop fence %d: %w", fenceID, err))
		return
	}
	ch.NexthopsGone = append(ch.NexthopsGone, Nexthop{ID: fenceID, Protocol: RouteProtocol, Blackhole: true})
}

// UnderlayMTU returns the smallest MTU among the interfaces the kernel would
// use to reach dsts (the peers' endpoints), and their names. With no
// destinations, or none routable, it returns 0.
func UnderlayMTU(nl Netlink, dsts []netip.Addr) (int, []string) {
	mtu := 0
	var names []string
	for _, d := range dsts {
		routes, err := nl.RouteGet(d.AsSlice())
		if err != nil || len(routes) == 0 {
			continue
		}
		link, err := nl.LinkByIndex(routes[0].LinkIndex)
		if err != nil {
			continue
		}
		a := link.Attrs()
		if !slices.Contains(names, a.Name) {
			names = append(names, a.Name)
		}
		if mtu == 0 || a.MTU < mtu {
			mtu = a.MTU
		}
	}
	return mtu, names
}

// String renders Changes for a log line.
func (c Changes) String() string {
	var parts []string
	if c.MTU {
		parts = append(parts, "mtu")
	}
	if c.LinkUp {
		parts = append(parts, "link up")
	}
	for _, l := range c.ExtraLinks {
		parts = append(parts, "link "+l)
	}
	for _, s := range c.Sysctls {
		parts = append(parts, "sysctl "+s.String())
	}
	for _, p := range c.AddrsAdded {
		parts = append(parts, "+addr "+p.String())
	}
	for _, p := range c.AddrsGone {
		parts = append(parts, "-addr "+p.String())
	}
	for _, nh := range c.NexthopsAdded {
		parts = append(parts, "+nexthop "+nh.String())
	}
	for _, nh := range c.NexthopsReplaced {
		parts = append(parts, "~nexthop "+nh.String())
	}
	for _, r := range c.Added {
		parts = append(parts, "+"+r.what())
	}
	for _, r := range c.Replaced {
		parts = append(parts, "~"+r.what())
	}
	for _, r := range c.Gone {
		parts = append(parts, "-"+r.what())
	}
	for _, nh := range c.NexthopsGone {
		parts = append(parts, "-nexthop "+fmt.Sprint(nh.ID))
	}
	return strings.Join(parts, ", ")
}
