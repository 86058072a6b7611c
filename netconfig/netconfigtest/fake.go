// Package netconfigtest holds test doubles and test environments for code
// that programs the kernel's network stack:
//
//   - Fake, an in-memory implementation of netconfig.Netlink with the
//     kernel's rules for route identity, rendered as text for golden tests;
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

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Fake is an in-memory netlink with links, addresses and routes.
type Fake struct {
	mu     sync.Mutex
	links  []*netlink.Device
	addrs  map[int][]netip.Prefix
	routes []netlink.Route
	// Ops records every mutating call, in order.
	Ops []string
}

// NewFake returns an empty Fake.
func NewFake() *Fake { return &Fake{addrs: map[int][]netip.Prefix{}} }

// AddLink creates a down link and returns its index.
func (f *Fake) AddLink(name string, mtu int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	idx := len(f.links) + 1
	f.links = append(f.links, &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: name, Index: idx, MTU: mtu}})
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
	f.routes = slices.DeleteFunc(f.routes, func(r netlink.Route) bool { return r.LinkIndex == idx })
}

// AddForeignRoute installs a route as another program would.
func (f *Fake) AddForeignRoute(r netlink.Route) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes = append(f.routes, r)
}

// DeleteRoutesTo removes every route to dst, as `ip route del` by hand would.
func (f *Fake) DeleteRoutesTo(dst string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := netip.MustParsePrefix(dst)
	f.routes = slices.DeleteFunc(f.routes, func(r netlink.Route) bool { return routePrefix(r) == p })
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
	return nil
}

func (f *Fake) RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []netlink.Route
	for _, r := range f.routes {
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
	f.Ops = append(f.Ops, "route add "+f.render(*r))
	if slices.ContainsFunc(f.routes, func(h netlink.Route) bool { return sameKey(h, *r) }) {
		return unix.EEXIST
	}
	if r.Type != unix.RTN_UNREACHABLE {
		if _, err := f.link(r.LinkIndex); err != nil {
			return unix.ENODEV
		}
	}
	f.routes = append(f.routes, *r)
	return nil
}

func (f *Fake) RouteReplace(r *netlink.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Ops = append(f.Ops, "route replace "+f.render(*r))
	if i := slices.IndexFunc(f.routes, func(h netlink.Route) bool { return sameKey(h, *r) }); i >= 0 {
		f.routes[i] = *r
		return nil
	}
	f.routes = append(f.routes, *r)
	return nil
}

func (f *Fake) RouteDel(r *netlink.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Ops = append(f.Ops, "route del "+f.render(*r))
	i := slices.IndexFunc(f.routes, func(h netlink.Route) bool {
		return sameKey(h, *r) && (r.Protocol == 0 || h.Protocol == r.Protocol) && (r.Type == 0 || h.Type == r.Type)
	})
	if i < 0 {
		return unix.ESRCH
	}
	f.routes = slices.Delete(f.routes, i, i+1)
	return nil
}

// RouteGet does a longest-prefix match over routes through a link.
func (f *Fake) RouteGet(dst net.IP) ([]netlink.Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, _ := netip.AddrFromSlice(dst)
	a = a.Unmap()
	best, bits := -1, -1
	for i, r := range f.routes {
		p := routePrefix(r)
		if r.LinkIndex != 0 && p.Contains(a) && p.Bits() > bits {
			best, bits = i, p.Bits()
		}
	}
	if best < 0 {
		return nil, unix.ENETUNREACH
	}
	return []netlink.Route{f.routes[best]}, nil
}

// String renders links, addresses and routes in a stable order.
func (f *Fake) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
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
	var lines []string
	for _, r := range f.routes {
		lines = append(lines, "route "+f.render(r))
	}
	slices.Sort(lines)
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	return b.String()
}

func (f *Fake) render(r netlink.Route) string {
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
