package netconfig

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
)

// linkState is what Apply learnt of one of cfg's links.
type linkState struct {
	index int
	up    bool
}

// applyLinks gives Link its MTU, addresses and up state and ExtraLinks their
// MTU and up state, then sets LinkSysctls on all of them. A missing Link is
// fatal; a missing extra link is an error, and its group members are left
// out.
func (m *Manager) applyLinks(cfg Config, ch *Changes) (map[string]linkState, []error, error) {
	link, err := m.nl.LinkByName(cfg.Link)
	if err != nil {
		return nil, nil, fmt.Errorf("interface %s: %w", cfg.Link, err)
	}
	var errs []error
	states := map[string]linkState{}
	ch.MTU, err = m.setMTU(link, cfg.MTU)
	errs = append(errs, err)
	added, gone, err := m.applyAddrs(link, cfg.Addresses)
	ch.AddrsAdded, ch.AddrsGone = added, gone
	errs = append(errs, err)
	ch.LinkUp, err = m.setUp(link)
	errs = append(errs, err)
	states[cfg.Link] = linkState{index: link.Attrs().Index, up: link.Attrs().Flags&net.FlagUp != 0 || ch.LinkUp}
	for _, name := range cfg.ExtraLinks {
		l, err := m.nl.LinkByName(name)
		if err != nil {
			errs = append(errs, fmt.Errorf("interface %s: %w", name, err))
			continue
		}
		mtu, err := m.setMTU(l, cfg.MTU)
		errs = append(errs, err)
		up, err := m.setUp(l)
		errs = append(errs, err)
		if mtu || up {
			ch.ExtraLinks = append(ch.ExtraLinks, name)
		}
		states[name] = linkState{index: l.Attrs().Index, up: l.Attrs().Flags&net.FlagUp != 0 || up}
	}
	if len(cfg.LinkSysctls) > 0 {
		var present []string
		for _, name := range cfg.links() {
			if _, ok := states[name]; ok {
				present = append(present, name)
			}
		}
		changed, err := m.SetLinkSysctls(present, cfg.LinkSysctls)
		ch.Sysctls = changed
		errs = append(errs, err)
	}
	return states, slices.DeleteFunc(errs, func(e error) bool { return e == nil }), nil
}

// setMTU sets the link's MTU unless mtu is 0 or already right.
func (m *Manager) setMTU(link netlink.Link, mtu int) (bool, error) {
	if attrs := link.Attrs(); mtu > 0 && attrs.MTU != mtu {
		if err := m.nl.LinkSetMTU(link, mtu); err != nil {
			return false, fmt.Errorf("set MTU %d on %s: %w", mtu, attrs.Name, err)
		}
		return true, nil
	}
	return false, nil
}

// setUp brings the link up unless it is.
func (m *Manager) setUp(link netlink.Link) (bool, error) {
	if attrs := link.Attrs(); attrs.Flags&net.FlagUp == 0 {
		if err := m.nl.LinkSetUp(link); err != nil {
			return false, fmt.Errorf("set %s up: %w", attrs.Name, err)
		}
		return true, nil
	}
	return false, nil
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

// LinkSysctl is a per-interface kernel setting. Key is "ipv4/NAME" or
// "ipv6/NAME", the file /proc/sys/net/ipv4/conf/LINK/NAME.
type LinkSysctl struct {
	Key, Value string
}

var linkSysctlKey = regexp.MustCompile(`^ipv[46]/[a-z0-9_]+$`)

func (s LinkSysctl) validate() error {
	if !linkSysctlKey.MatchString(s.Key) || s.Value == "" {
		return fmt.Errorf("netconfig: LinkSysctls: %q=%q: want a key like ipv4/rp_filter and a value", s.Key, s.Value)
	}
	return nil
}

func (s LinkSysctl) name(link string) string {
	fam, name, _ := strings.Cut(s.Key, "/")
	return "net/" + fam + "/conf/" + link + "/" + name
}

// GatewayLinkSysctls are what every WireGuard link of a gateway needs when
// sites have several gateways: loose reverse-path filtering (rp_filter=2),
// because return traffic may arrive through a remote gateway that is standby
// or drained, so not in the group the reverse lookup finds, and strict
// filtering would drop it. The kernel uses the larger of conf/all and the
// link's value, so 2 on the link wins over a strict conf/all.
func GatewayLinkSysctls() []LinkSysctl { return []LinkSysctl{{Key: "ipv4/rp_filter", Value: "2"}} }

// SysctlChange is one kernel setting that was changed.
type SysctlChange struct {
	Name     string // path below /proc/sys, as "net/ipv4/conf/dcm1/rp_filter"
	Old, New string
}

func (c SysctlChange) String() string { return c.Name + " " + c.Old + "->" + c.New }

// Sysctls reads and writes kernel settings (/proc/sys) in the namespace of
// the Netlink; *Handle and netconfigtest.Fake implement it.
type Sysctls interface {
	Sysctl(name string) (string, error)
	SetSysctl(name, value string) error
}

// SetLinkSysctls sets settings on each of links, which must be interfaces
// that exist (pass only dcmesh's own), and returns what it changed: values
// already right are left alone.
func (m *Manager) SetLinkSysctls(links []string, settings []LinkSysctl) ([]SysctlChange, error) {
	var names []string
	for _, l := range links {
		if _, err := m.nl.LinkByName(l); err != nil {
			return nil, fmt.Errorf("interface %s: %w", l, err)
		}
		for _, s := range settings {
			if err := s.validate(); err != nil {
				return nil, err
			}
			names = append(names, s.name(l), s.Value)
		}
	}
	return m.setSysctls(names)
}

// SetMultipathHashPolicy sets how the kernel spreads flows over the members
// of a nexthop group, for IPv4 and IPv6, namespace-wide: 1 hashes the L4
// five-tuple, so flows between the same two hosts use several gateways (the
// recommended value; the kernel's default, 0, hashes addresses only).
func (m *Manager) SetMultipathHashPolicy(policy int) ([]SysctlChange, error) {
	v := fmt.Sprint(policy)
	return m.setSysctls([]string{"net/ipv4/fib_multipath_hash_policy", v, "net/ipv6/fib_multipath_hash_policy", v})
}

// setSysctls sets name/value pairs, reading first so that only what
// differs is written and reported.
func (m *Manager) setSysctls(pairs []string) ([]SysctlChange, error) {
	if m.sys == nil {
		return nil, errors.New("sysctls need a Netlink that can set them (open it with netconfig.OpenHandle)")
	}
	var out []SysctlChange
	var errs []error
	for i := 0; i+1 < len(pairs); i += 2 {
		name, want := pairs[i], pairs[i+1]
		old, err := m.sys.Sysctl(name)
		if err != nil {
			errs = append(errs, fmt.Errorf("read sysctl %s: %w", name, err))
			continue
		}
		if old == want {
			continue
		}
		if err := m.sys.SetSysctl(name, want); err != nil {
			errs = append(errs, fmt.Errorf("set sysctl %s=%s: %w", name, want, err))
			continue
		}
		out = append(out, SysctlChange{Name: name, Old: old, New: want})
	}
	return out, errors.Join(errs...)
}
