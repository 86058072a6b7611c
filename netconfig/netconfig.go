package netconfig

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Config is the desired kernel state for one site.
type Config struct {
	// Link is the WireGuard interface name.
	Link string
	// MTU of the link; 0 leaves it alone.
	MTU int
	// Addresses are the overlay addresses on the link; others on it go.
	Addresses []netip.Prefix
	// Table holds our routes; 0 means the main table.
	Table int
	// Metric of tunnel routes. Fail-closed routes use Metric+1: worse than
	// the tunnel, better than anything a later hop would add.
	Metric int
	// Routes are sent into the link.
	Routes []netip.Prefix
	// FailClosed get an unreachable route each. Normally every prefix in
	// Routes is also here.
	FailClosed []netip.Prefix
}

func (c Config) table() int {
	if c.Table == 0 {
		return MainTable
	}
	return c.Table
}

func (c Config) failClosedMetric() int { return c.Metric + 1 }

// Netlink is the part of *netlink.Handle that Manager uses;
// netconfigtest.Fake implements it in memory.
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

// Manager applies Configs. It keeps no state between calls: every Apply
// compares with what the kernel reports, so drift is repaired and a restarted
// agent sweeps what a previous one left.
type Manager struct {
	nl  Netlink
	log *slog.Logger
}

// New returns a Manager over nl (normally a *netlink.Handle opened in the
// agent's network namespace).
func New(nl Netlink, log *slog.Logger) *Manager {
	if log == nil {
		log = slog.Default()
	}
	return &Manager{nl: nl, log: log}
}

// Changes lists what Apply changed.
type Changes struct {
	MTU                   bool
	LinkUp                bool
	AddrsAdded, AddrsGone []netip.Prefix
	Added, Replaced, Gone []Route
}

// Empty reports whether nothing changed.
func (c Changes) Empty() bool {
	return !c.MTU && !c.LinkUp && len(c.AddrsAdded)+len(c.AddrsGone)+len(c.Added)+len(c.Replaced)+len(c.Gone) == 0
}

// ErrRouteConflict means a route that dcmesh does not own occupies the place
// (same prefix, table and metric) of one we need.
var ErrRouteConflict = errors.New("route conflicts with a route dcmesh does not own")

// Apply moves the link and our routes to cfg: adds before deletes, so a
// prefix is never left without either its tunnel route or its fail-closed
// route. It carries on past individual failures and returns them joined.
func (m *Manager) Apply(cfg Config) (Changes, error) {
	var ch Changes
	link, err := m.nl.LinkByName(cfg.Link)
	if err != nil {
		return ch, fmt.Errorf("interface %s: %w", cfg.Link, err)
	}
	var errs []error
	attrs := link.Attrs()
	if cfg.MTU > 0 && attrs.MTU != cfg.MTU {
		if err := m.nl.LinkSetMTU(link, cfg.MTU); err != nil {
			errs = append(errs, fmt.Errorf("set MTU %d on %s: %w", cfg.MTU, cfg.Link, err))
		} else {
			ch.MTU = true
		}
	}
	added, gone, err := m.applyAddrs(link, cfg.Addresses)
	ch.AddrsAdded, ch.AddrsGone = added, gone
	if err != nil {
		errs = append(errs, err)
	}
	if attrs.Flags&net.FlagUp == 0 {
		if err := m.nl.LinkSetUp(link); err != nil {
			errs = append(errs, fmt.Errorf("set %s up: %w", cfg.Link, err))
		} else {
			ch.LinkUp = true
		}
	}

	have, err := m.OwnedRoutes(cfg.table())
	if err != nil {
		return ch, errors.Join(append(errs, err)...)
	}
	add, replace, del := diffRoutes(have, desiredRoutes(cfg, attrs.Index))
	for _, r := range add {
		if err := m.nl.RouteAdd(r.toNetlink()); err != nil {
			if errors.Is(err, unix.EEXIST) {
				err = fmt.Errorf("%w: %s already has a route with metric %d in table %d (find it with `ip route show table %d %s`; remove it or set routes.metric)", ErrRouteConflict, r.Dst, r.Metric, r.Table, r.Table, r.Dst)
			}
			errs = append(errs, fmt.Errorf("add route %s: %w", r, err))
			continue
		}
		ch.Added = append(ch.Added, r)
	}
	for _, r := range replace {
		if err := m.nl.RouteReplace(r.toNetlink()); err != nil {
			errs = append(errs, fmt.Errorf("replace route %s: %w", r, err))
			continue
		}
		ch.Replaced = append(ch.Replaced, r)
	}
	for _, r := range del {
		if err := m.nl.RouteDel(r.toNetlink()); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %s: %w", r, err))
			continue
		}
		ch.Gone = append(ch.Gone, r)
	}
	return ch, errors.Join(errs...)
}

// applyAddrs makes the global-scope addresses on link exactly want, adding
// before deleting (removing the last address first would take the link's
// routes with it).
func (m *Manager) applyAddrs(link netlink.Link, want []netip.Prefix) (added, gone []netip.Prefix, _ error) {
	cur, err := m.nl.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, nil, fmt.Errorf("list addresses of %s: %w", link.Attrs().Name, err)
	}
	have := map[netip.Prefix]bool{}
	for _, a := range cur {
		p := ipNetToPrefix(a.IPNet, 0)
		if p.Addr().IsLinkLocalUnicast() {
			continue // the kernel's own fe80::/64, not ours to manage
		}
		have[p] = true
	}
	var errs []error
	wantSet := map[netip.Prefix]bool{}
	for _, p := range want {
		wantSet[p] = true
		if have[p] {
			continue
		}
		if err := m.nl.AddrReplace(link, &netlink.Addr{IPNet: prefixToHostNet(p)}); err != nil {
			errs = append(errs, fmt.Errorf("add address %s to %s: %w", p, link.Attrs().Name, err))
			continue
		}
		added = append(added, p)
	}
	for p := range have {
		if wantSet[p] {
			continue
		}
		if err := m.nl.AddrDel(link, &netlink.Addr{IPNet: prefixToHostNet(p)}); err != nil {
			errs = append(errs, fmt.Errorf("remove address %s from %s: %w", p, link.Attrs().Name, err))
			continue
		}
		gone = append(gone, p)
	}
	slices.SortFunc(gone, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return added, gone, errors.Join(errs...)
}

// prefixToHostNet keeps the host part: an address, not a network.
func prefixToHostNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// OwnedRoutes lists the routes of ours in table (0: main), IPv4 and IPv6.
func (m *Manager) OwnedRoutes(table int) ([]Route, error) {
	if table == 0 {
		table = MainTable
	}
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
	slices.SortFunc(out, compareRoutes)
	return out, nil
}

// Purge deletes every route of ours in table, fail-closed routes included.
// It is the explicit "remove everything" of `dcmesh down --purge`.
func (m *Manager) Purge(table int) ([]Route, error) {
	have, err := m.OwnedRoutes(table)
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
	return gone, errors.Join(errs...)
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
	for _, p := range c.AddrsAdded {
		parts = append(parts, "+addr "+p.String())
	}
	for _, p := range c.AddrsGone {
		parts = append(parts, "-addr "+p.String())
	}
	for _, r := range c.Added {
		parts = append(parts, "+"+r.Kind.String()+" "+r.Dst.String())
	}
	for _, r := range c.Replaced {
		parts = append(parts, "~"+r.Kind.String()+" "+r.Dst.String())
	}
	for _, r := range c.Gone {
		parts = append(parts, "-"+r.Kind.String()+" "+r.Dst.String())
	}
	return strings.Join(parts, ", ")
}
