// Package netconfigtest holds test doubles and test environments for code
// that programs the kernel's network stack:
//
//   - Fake, an in-memory implementation of netconfig.Netlink (and of
//     NexthopNetlink, Sysctls and RuleLister) with the kernel's rules for
//     route identity and nexthop objects, rendered as text for golden tests;
//   - network namespaces, veth pairs and processes started inside a
//     namespace, for integration tests that need root. Everything is created
//     under unique names and removed by exact name in t.Cleanup, also when
//     the test fails.
package netconfigtest

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Fake is an in-memory netlink with links, addresses, routes, nexthop
// objects, sysctls and policy rules.
type Fake struct {
	mu       sync.Mutex
	links    []*netlink.Device
	addrs    map[int][]netip.Prefix
	routes   []netlink.Route
	nhRoutes []netconfig.NexthopRoute // routes over a nexthop object
	nexthops map[uint32]netconfig.Nexthop
	sysctls  map[string]string
	defaults map[string]string // sysctl values rendered only when changed
	rules    []netlink.Rule
	// Ops records every mutating call, in order.
	Ops []string
	// OnChange, if set, is called with the rendered state after every
	// mutating call (with the Fake locked: it must not call back).
	OnChange func(state string)
	// NoNexthops makes the Fake a kernel before Linux 5.3 (EOPNOTSUPP for
	// nexthop objects); NoResilient one before 5.13 (EINVAL for resilient
	// groups).
	NoNexthops, NoResilient bool
}

// NewFake returns an empty Fake with the kernel's default policy rules.
func NewFake() *Fake {
	f := &Fake{addrs: map[int][]netip.Prefix{}, nexthops: map[uint32]netconfig.Nexthop{},
		sysctls: map[string]string{}, defaults: map[string]string{}}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		for _, r := range []struct{ prio, table int }{{0, unix.RT_TABLE_LOCAL}, {32766, unix.RT_TABLE_MAIN}, {32767, unix.RT_TABLE_DEFAULT}} {
			f.rules = append(f.rules, netlink.Rule{Family: fam, Priority: r.prio, Table: r.table, Type: unix.FR_ACT_TO_TBL})
		}
	}
	for _, fam := range []string{"ipv4", "ipv6"} {
		f.setDefault("net/"+fam+"/fib_multipath_hash_policy", "0")
	}
	return f
}

func (f *Fake) setDefault(name, v string) { f.sysctls[name], f.defaults[name] = v, v }

// changed reports a mutation to OnChange.
func (f *Fake) changed() {
	if f.OnChange != nil {
		f.OnChange(f.render())
	}
}

// AddLink creates a down link and returns its index.
func (f *Fake) AddLink(name string, mtu int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	idx := len(f.links) + 1
	f.links = append(f.links, &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: name, Index: idx, MTU: mtu}})
	f.setDefault("net/ipv4/conf/"+name+"/rp_filter", "0")
	return idx
}

// DelLink removes a link and, as the kernel does, every route through it.
func (f *Fake) DelLink(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := slices.IndexFunc(f.links, func(l *netlink.Device) bool { return l.Name == name })
	if i < 0 {
		return
	}
	idx := f.links[i].Index
	f.links[i] = &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "(deleted)", Index: idx}}
	delete(f.addrs, idx)
	f.dropLink(idx)
	for k := range f.sysctls {
		if strings.HasPrefix(k, "net/ipv4/conf/"+name+"/") {
			delete(f.sysctls, k)
			delete(f.defaults, k)
		}
	}
	f.changed()
}

// SetLinkDown sets a link down, as `ip link set NAME down` does: its
// routes and nexthops go (groups shrink).
func (f *Fake) SetLinkDown(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, l := range f.links {
		if l.Name == name {
			l.Flags &^= net.FlagUp
			f.dropLink(l.Index)
		}
	}
	f.changed()
}

// dropLink removes what the kernel removes with a link: routes through it
// and its nexthops.
func (f *Fake) dropLink(idx int) {
	f.routes = slices.DeleteFunc(f.routes, func(r netlink.Route) bool { return r.LinkIndex == idx })
	for id, nh := range f.nexthops {
		if !nh.IsGroup() && !nh.Blackhole && nh.Link == idx {
			f.removeNexthop(id)
		}
	}
}

// AddForeignRoute installs a route as another program would.
func (f *Fake) AddForeignRoute(r netlink.Route) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes = append(f.routes, r)
	f.changed()
}

// DeleteRoutesTo removes every route to dst, as `ip route del` by hand would.
func (f *Fake) DeleteRoutesTo(dst string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := netip.MustParsePrefix(dst)
	f.routes = slices.DeleteFunc(f.routes, func(r netlink.Route) bool { return routePrefix(r) == p })
	f.nhRoutes = slices.DeleteFunc(f.nhRoutes, func(r netconfig.NexthopRoute) bool { return r.Dst == p })
	f.changed()
}

func (f *Fake) link(idx int) (*netlink.Device, error) {
	for _, l := range f.links {
		if l.Index == idx && l.Name != "(deleted)" {
			return l, nil
		}
	}
	return nil, netlink.LinkNotFoundError{}
}

func (f *Fake) LinkByName(name string) (netlink.Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, l := range f.links {
		if l.Name == name {
			cp := *l
			return &cp, nil
		}
	}
	return nil, netlink.LinkNotFoundError{}
}

func (f *Fake) LinkByIndex(index int) (netlink.Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, err := f.link(index)
	if err != nil {
		return nil, err
	}
	cp := *l
	return &cp, nil
}

func (f *Fake) LinkSetMTU(link netlink.Link, mtu int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, err := f.link(link.Attrs().Index)
	if err != nil {
		return err
	}
	f.Ops = append(f.Ops, fmt.Sprintf("link set %s mtu %d", l.Name, mtu))
	l.MTU = mtu
	f.changed()
	return nil
}

func (f *Fake) LinkSetUp(link netlink.Link) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, err := f.link(link.Attrs().Index)
	if err != nil {
		return err
	}
	f.Ops = append(f.Ops, fmt.Sprintf("link set %s up", l.Name))
	l.Flags |= net.FlagUp
	f.changed()
	return nil
}

func (f *Fake) AddrList(link netlink.Link, family int) ([]netlink.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []netlink.Addr
	for _, p := range f.addrs[link.Attrs().Index] {
		out = append(out, netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}})
	}
	return out, nil
}

func (f *Fake) AddrReplace(link netlink.Link, addr *netlink.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := ipNetPrefix(addr.IPNet)
	f.Ops = append(f.Ops, fmt.Sprintf("addr replace %s dev %s", p, link.Attrs().Name))
	idx := link.Attrs().Index
	if !slices.Contains(f.addrs[idx], p) {
		f.addrs[idx] = append(f.addrs[idx], p)
	}
	f.changed()
	return nil
}

func (f *Fake) AddrDel(link netlink.Link, addr *netlink.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := ipNetPrefix(addr.IPNet)
	f.Ops = append(f.Ops, fmt.Sprintf("addr del %s dev %s", p, link.Attrs().Name))
	idx := link.Attrs().Index
	i := slices.Index(f.addrs[idx], p)
	if i < 0 {
		return unix.EADDRNOTAVAIL
	}
	f.addrs[idx] = slices.Delete(f.addrs[idx], i, i+1)
	f.changed()
	return nil
}

func (f *Fake) RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []netlink.Route
	for _, r := range append(slices.Clone(f.routes), f.compatRoutes()...) {
		if family != netlink.FAMILY_ALL && routeFamily(r) != family {
			continue
		}
		if mask&netlink.RT_FILTER_TABLE != 0 && tableOf(r) != tableOf(*filter) {
			continue
		}
		if mask&netlink.RT_FILTER_PROTOCOL != 0 && r.Protocol != filter.Protocol {
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// sameKey is the kernel's route identity: destination, table and metric.
func sameKey(a, b netlink.Route) bool {
	return routePrefix(a) == routePrefix(b) && tableOf(a) == tableOf(b) && a.Priority == b.Priority
}

func (f *Fake) RouteAdd(r *netlink.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Ops = append(f.Ops, "route add "+f.renderRoute(*r))
	if f.keyTaken(routePrefix(*r), tableOf(*r), r.Priority) {
		return unix.EEXIST
	}
	if r.Type != unix.RTN_UNREACHABLE {
		if _, err := f.link(r.LinkIndex); err != nil {
			return unix.ENODEV
		}
	}
	f.routes = append(f.routes, *r)
	f.changed()
	return nil
}

func (f *Fake) RouteReplace(r *netlink.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Ops = append(f.Ops, "route replace "+f.renderRoute(*r))
	f.dropNexthopRoute(routePrefix(*r), tableOf(*r), r.Priority)
	if i := slices.IndexFunc(f.routes, func(h netlink.Route) bool { return sameKey(h, *r) }); i >= 0 {
		f.routes[i] = *r
		f.changed()
		return nil
	}
	f.routes = append(f.routes, *r)
	f.changed()
	return nil
}

func (f *Fake) RouteDel(r *netlink.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Ops = append(f.Ops, "route del "+f.renderRoute(*r))
	i := slices.IndexFunc(f.routes, func(h netlink.Route) bool {
		return sameKey(h, *r) && (r.Protocol == 0 || h.Protocol == r.Protocol) && (r.Type == 0 || h.Type == r.Type)
	})
	if i >= 0 {
		f.routes = slices.Delete(f.routes, i, i+1)
		f.changed()
		return nil
	}
	if (r.Type == 0 || r.Type == unix.RTN_UNICAST) && r.LinkIndex == 0 {
		j := slices.IndexFunc(f.nhRoutes, func(h netconfig.NexthopRoute) bool {
			return h.Dst == routePrefix(*r) && h.Table == tableOf(*r) && h.Metric == r.Priority && (r.Protocol == 0 || h.Protocol == r.Protocol)
		})
		if j >= 0 {
			f.nhRoutes = slices.Delete(f.nhRoutes, j, j+1)
			f.changed()
			return nil
		}
	}
	return unix.ESRCH
}

// RouteGet does a longest-prefix match over routes through a link.
func (f *Fake) RouteGet(dst net.IP) ([]netlink.Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, _ := netip.AddrFromSlice(dst)
	a = a.Unmap()
	best, bits := -1, -1
	routes := append(slices.Clone(f.routes), f.compatRoutes()...)
	for i, r := range routes {
		p := routePrefix(r)
		if r.LinkIndex != 0 && p.Contains(a) && p.Bits() > bits {
			best, bits = i, p.Bits()
		}
	}
	if best < 0 {
		return nil, unix.ENETUNREACH
	}
	return []netlink.Route{routes[best]}, nil
}

// String renders links, addresses, changed sysctls, nexthop objects and
// routes in a stable order.
func (f *Fake) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.render()
}

func (f *Fake) render() string {
	var b strings.Builder
	for _, l := range f.links {
		if l.Name == "(deleted)" {
			continue
		}
		state := "down"
		if l.Flags&net.FlagUp != 0 {
			state = "up"
		}
		fmt.Fprintf(&b, "link %s mtu %d %s\n", l.Name, l.MTU, state)
		addrs := slices.Clone(f.addrs[l.Index])
		slices.SortFunc(addrs, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
		for _, a := range addrs {
			fmt.Fprintf(&b, "  addr %s\n", a)
		}
	}
	b.WriteString(f.renderSysctls())
	b.WriteString(f.renderNexthops())
	var lines []string
	for _, r := range f.routes {
		lines = append(lines, "route "+f.renderRoute(r))
	}
	for _, r := range f.nhRoutes {
		lines = append(lines, "route "+renderNexthopRoute(r))
	}
	slices.Sort(lines)
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	return b.String()
}

func (f *Fake) renderRoute(r netlink.Route) string {
	var s string
	if r.Type == unix.RTN_UNREACHABLE {
		s = "unreachable " + routePrefix(r).String()
	} else {
		name := fmt.Sprintf("#%d", r.LinkIndex)
		if l, err := f.link(r.LinkIndex); err == nil {
			name = l.Name
		}
		s = routePrefix(r).String() + " dev " + name
	}
	return fmt.Sprintf("%s proto %d metric %d table %d", s, r.Protocol, r.Priority, tableOf(r))
}

func tableOf(r netlink.Route) int {
	if r.Table == 0 {
		return unix.RT_TABLE_MAIN
	}
	return r.Table
}

func routeFamily(r netlink.Route) int {
	if routePrefix(r).Addr().Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

func routePrefix(r netlink.Route) netip.Prefix {
	if r.Dst == nil {
		if r.Family == netlink.FAMILY_V6 {
			return netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	return ipNetPrefix(r.Dst)
}

func ipNetPrefix(n *net.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}
