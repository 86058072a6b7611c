package netconfigtest

import (
	"cmp"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The Fake's nexthop objects follow the kernel's rules (Linux 6.x, measured
// in netconfig's namespace tests): ids are unique; a group's members must
// exist and be single nexthops; a nexthop needs a link that is up; a group
// cannot change type by replace; deleting a single nexthop (or its link)
// takes it out of every group, a group left empty goes, and routes over a
// deleted object go with it.

// AddForeignNexthop installs a nexthop object as another program would,
// without the checks.
func (f *Fake) AddForeignNexthop(nh netconfig.Nexthop) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nexthops[nh.ID] = nh
	f.changed()
}

// AddForeignNexthopRoute installs a route over a nexthop object as another
// program would.
func (f *Fake) AddForeignNexthopRoute(r netconfig.NexthopRoute) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nhRoutes = append(f.nhRoutes, r)
	f.changed()
}

// AddRule adds a policy rule.
func (f *Fake) AddRule(r netlink.Rule) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = append(f.rules, r)
}

// RuleList returns the policy rules of family.
func (f *Fake) RuleList(family int) ([]netlink.Rule, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []netlink.Rule
	for _, r := range f.rules {
		if family == netlink.FAMILY_ALL || r.Family == family {
			out = append(out, r)
		}
	}
	slices.SortStableFunc(out, func(a, b netlink.Rule) int { return cmp.Compare(a.Priority, b.Priority) })
	return out, nil
}

// Sysctl reads a setting; links come with net/ipv4/conf/NAME/rp_filter.
func (f *Fake) Sysctl(name string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.sysctls[name]
	if !ok {
		return "", unix.ENOENT
	}
	return v, nil
}

// SetSysctl writes a setting that exists.
func (f *Fake) SetSysctl(name, value string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Ops = append(f.Ops, "sysctl "+name+"="+value)
	if _, ok := f.sysctls[name]; !ok {
		return unix.ENOENT
	}
	f.sysctls[name] = value
	f.changed()
	return nil
}

// NexthopList lists every nexthop object.
func (f *Fake) NexthopList() ([]netconfig.Nexthop, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.NoNexthops {
		return nil, unix.EOPNOTSUPP
	}
	out := slices.Collect(maps.Values(f.nexthops))
	slices.SortFunc(out, func(a, b netconfig.Nexthop) int { return cmp.Compare(a.ID, b.ID) })
	for i := range out {
		out[i].Members = slices.Clone(out[i].Members)
	}
	return out, nil
}

// NexthopAdd creates nh.
func (f *Fake) NexthopAdd(nh netconfig.Nexthop) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Ops = append(f.Ops, "nexthop add "+f.renderNexthop(nh))
	if err := f.checkNexthop(nh); err != nil {
		return err
	}
	if _, ok := f.nexthops[nh.ID]; ok {
		return unix.EEXIST
	}
	f.putNexthop(nh)
	return nil
}

// NexthopReplace replaces or creates nh.
func (f *Fake) NexthopReplace(nh netconfig.Nexthop) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Ops = append(f.Ops, "nexthop replace "+f.renderNexthop(nh))
	if err := f.checkNexthop(nh); err != nil {
		return err
	}
	if old, ok := f.nexthops[nh.ID]; ok && (old.IsGroup() != nh.IsGroup() || old.Resilient != nh.Resilient) {
		return unix.EINVAL // "Can not replace a nexthop group with one of a different type"
	}
	f.putNexthop(nh)
	return nil
}

func (f *Fake) putNexthop(nh netconfig.Nexthop) {
	nh.Members = slices.Clone(nh.Members)
	slices.SortFunc(nh.Members, func(a, b netconfig.NexthopMember) int { return cmp.Compare(a.ID, b.ID) })
	f.nexthops[nh.ID] = nh
	f.changed()
}

func (f *Fake) checkNexthop(nh netconfig.Nexthop) error {
	switch {
	case f.NoNexthops:
		return unix.EOPNOTSUPP
	case nh.ID == 0:
		return unix.EINVAL
	case nh.IsGroup():
		if nh.Resilient && f.NoResilient {
			return unix.EINVAL
		}
		for _, m := range nh.Members {
			mem, ok := f.nexthops[m.ID]
			if !ok || mem.IsGroup() || (mem.Blackhole && len(nh.Members) > 1) || m.Weight < 1 || m.Weight > 256 {
				return unix.EINVAL
			}
		}
	case nh.Blackhole:
	default:
		l, err := f.link(nh.Link)
		if err != nil {
			return unix.ENODEV
		}
		if l.Flags&net.FlagUp == 0 {
			return unix.ENETDOWN
		}
	}
	return nil
}

// NexthopDel deletes a nexthop object, as the kernel does.
func (f *Fake) NexthopDel(id uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Ops = append(f.Ops, fmt.Sprintf("nexthop del id %d", id))
	if f.NoNexthops {
		return unix.EOPNOTSUPP
	}
	if _, ok := f.nexthops[id]; !ok {
		return unix.ENOENT
	}
	f.removeNexthop(id)
	f.changed()
	return nil
}

// removeNexthop deletes id with the kernel's consequences.
func (f *Fake) removeNexthop(id uint32) {
	delete(f.nexthops, id)
	f.nhRoutes = slices.DeleteFunc(f.nhRoutes, func(r netconfig.NexthopRoute) bool { return r.Nexthop == id })
	for gid, g := range f.nexthops {
		if !g.IsGroup() {
			continue
		}
		g.Members = slices.DeleteFunc(slices.Clone(g.Members), func(m netconfig.NexthopMember) bool { return m.ID == id })
		if len(g.Members) == 0 {
			f.removeNexthop(gid)
			continue
		}
		f.nexthops[gid] = g
	}
}

// RouteListNexthop lists the routes of table over nexthop objects.
func (f *Fake) RouteListNexthop(table int) ([]netconfig.NexthopRoute, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []netconfig.NexthopRoute
	for _, r := range f.nhRoutes {
		if r.Table == table {
			out = append(out, r)
		}
	}
	return out, nil
}

// RouteAddNexthop adds a route over a nexthop object.
func (f *Fake) RouteAddNexthop(r netconfig.NexthopRoute) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Ops = append(f.Ops, "route add "+renderNexthopRoute(r))
	if f.keyTaken(r.Dst, r.Table, r.Metric) {
		return unix.EEXIST
	}
	return f.putNexthopRoute(r)
}

// RouteReplaceNexthop replaces or adds a route over a nexthop object.
func (f *Fake) RouteReplaceNexthop(r netconfig.NexthopRoute) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Ops = append(f.Ops, "route replace "+renderNexthopRoute(r))
	if err := f.checkNexthopRoute(r); err != nil {
		return err
	}
	f.routes = slices.DeleteFunc(f.routes, func(h netlink.Route) bool {
		return routePrefix(h) == r.Dst && tableOf(h) == r.Table && h.Priority == r.Metric
	})
	f.dropNexthopRoute(r.Dst, r.Table, r.Metric)
	return f.putNexthopRoute(r)
}

func (f *Fake) putNexthopRoute(r netconfig.NexthopRoute) error {
	if err := f.checkNexthopRoute(r); err != nil {
		return err
	}
	f.nhRoutes = append(f.nhRoutes, r)
	f.changed()
	return nil
}

// checkNexthopRoute: the object must exist, and IPv6 routes cannot use
// IPv4 nexthops.
func (f *Fake) checkNexthopRoute(r netconfig.NexthopRoute) error {
	nh, ok := f.nexthops[r.Nexthop]
	if !ok {
		return unix.EINVAL
	}
	if r.Dst.Addr().Is6() {
		for _, m := range append([]netconfig.NexthopMember{{ID: nh.ID}}, nh.Members...) {
			if f.nexthops[m.ID].Family == unix.AF_INET {
				return unix.EINVAL
			}
		}
	}
	return nil
}

func (f *Fake) keyTaken(dst netip.Prefix, table, metric int) bool {
	return slices.ContainsFunc(f.routes, func(h netlink.Route) bool {
		return routePrefix(h) == dst && tableOf(h) == table && h.Priority == metric
	}) || slices.ContainsFunc(f.nhRoutes, func(h netconfig.NexthopRoute) bool {
		return h.Dst == dst && h.Table == table && h.Metric == metric
	})
}

func (f *Fake) dropNexthopRoute(dst netip.Prefix, table, metric int) {
	f.nhRoutes = slices.DeleteFunc(f.nhRoutes, func(h netconfig.NexthopRoute) bool {
		return h.Dst == dst && h.Table == table && h.Metric == metric
	})
}

// compatRoutes renders routes over nexthop objects as the kernel's dumps
// do for programs that know no RTA_NH_ID (nexthop_compat_mode 1): the
// members' links, as a multipath route when there are several.
func (f *Fake) compatRoutes() []netlink.Route {
	var out []netlink.Route
	for _, r := range f.nhRoutes {
		nr := netlink.Route{Dst: &net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), r.Dst.Addr().BitLen())},
			Table: r.Table, Priority: r.Metric, Protocol: r.Protocol, Type: unix.RTN_UNICAST, Scope: netlink.SCOPE_LINK,
			Family: netlink.FAMILY_V4}
		if r.Dst.Addr().Is6() {
			nr.Family = netlink.FAMILY_V6
		}
		nh := f.nexthops[r.Nexthop]
		links := []int{nh.Link}
		if nh.IsGroup() {
			links = nil
			for _, m := range nh.Members {
				links = append(links, f.nexthops[m.ID].Link)
			}
		}
		if len(links) == 1 {
			nr.LinkIndex = links[0]
		} else {
			for _, l := range links {
				nr.MultiPath = append(nr.MultiPath, &netlink.NexthopInfo{LinkIndex: l})
			}
		}
		out = append(out, nr)
	}
	return out
}

func (f *Fake) renderSysctls() string {
	var lines []string
	for k, v := range f.sysctls {
		if f.defaults[k] != v {
			lines = append(lines, "sysctl "+k+"="+v+"\n")
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "")
}

func (f *Fake) renderNexthops() string {
	ids := slices.Sorted(maps.Keys(f.nexthops))
	var b strings.Builder
	for _, id := range ids {
		b.WriteString("nexthop " + f.renderNexthop(f.nexthops[id]) + "\n")
	}
	return b.String()
}

// renderNexthop is `ip nexthop show` with link names.
func (f *Fake) renderNexthop(nh netconfig.Nexthop) string {
	s := nh.String()
	if !nh.IsGroup() && !nh.Blackhole {
		name := fmt.Sprintf("#%d", nh.Link)
		if l, err := f.link(nh.Link); err == nil {
			name = l.Name
		}
		s = strings.Replace(s, fmt.Sprintf("dev #%d", nh.Link), "dev "+name, 1)
	}
	return s
}

func renderNexthopRoute(r netconfig.NexthopRoute) string {
	return fmt.Sprintf("%s nhid %d proto %d metric %d table %d", r.Dst, r.Nexthop, r.Protocol, r.Metric, r.Table)
}

var (
	_ netconfig.Netlink        = (*Fake)(nil)
	_ netconfig.NexthopNetlink = (*Fake)(nil)
	_ netconfig.Sysctls        = (*Fake)(nil)
	_ netconfig.RuleLister     = (*Fake)(nil)
)
