package netconfig

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// How Apply turns Groups into kernel state, in this order (adds before
// deletes, as for routes):
//
//  1. every link used by a group of two or more members gets a single
//     nexthop of ours ("dev dcmK"), shared by all groups; a link that
//     refuses one leaves its groups;
//  2. each such group gets a group object, created or replaced in one step
//     (the kernel moves every route over it at once);
//  3. routes point at the groups (Apply's route diff);
//  4. nexthop objects of ours that nothing wants any more are deleted,
//     groups first, and never one that a route or group still uses.

// resolvedGroup is a Group with the members Apply can use.
type resolvedGroup struct {
	Group
	members []resolvedMember // in the caller's order
}

type resolvedMember struct {
	link          string
	index, weight int
}

// nexthopState is what Apply did to nexthop objects and leaves to do.
type nexthopState struct {
	routes   []Route            // the groups' tunnel routes
	del      []Nexthop          // ours, no longer wanted
	replaced map[uint32]Nexthop // groups replaced, with their new content
}

// listNexthops returns every nexthop object; none when the Netlink or the
// kernel has no nexthop objects.
func (m *Manager) listNexthops() ([]Nexthop, error) {
	m.mu.Lock()
	none := m.nh == nil || m.noNexthops
	m.mu.Unlock()
	if none {
		return nil, nil
	}
	nhs, err := m.nh.NexthopList()
	if errors.Is(err, unix.EOPNOTSUPP) { // before Linux 5.3
		m.mu.Lock()
		m.noNexthops = true
		m.mu.Unlock()
		return nil, nil
	}
	return nhs, err
}

func ownedNexthops(nhs []Nexthop, table int) []Nexthop {
	return selectNexthops(nhs, table, ownNexthop)
}

// legacyNexthops are the objects of ours for table at their former ids
// (legacyIDBase), sorted by id: Apply and Purge delete them.
func legacyNexthops(nhs []Nexthop, table int) []Nexthop {
	return selectNexthops(nhs, table, legacyNexthop)
}

// selectNexthops returns the nexthops of nhs that keep holds for table,
// sorted by id.
func selectNexthops(nhs []Nexthop, table int, keep func(Nexthop, int) bool) []Nexthop {
	var out []Nexthop
	for _, nh := range nhs {
		if keep(nh, table) {
			out = append(out, nh)
		}
	}
	slices.SortFunc(out, compareNexthops)
	return out
}

// OwnedNexthops lists the nexthop objects of ours for table (0: main).
func (m *Manager) OwnedNexthops(table int) ([]Nexthop, error) {
	if table == 0 {
		table = MainTable
	}
	nhs, err := m.listNexthops()
	return ownedNexthops(nhs, table), err
}

// nexthopPlanner carries one Apply's view of the kernel's nexthop objects.
type nexthopPlanner struct {
	m       *Manager
	table   int
	nhs     []Nexthop
	byID    map[uint32]Nexthop
	have    []Route         // our routes in table
	taken   map[uint32]bool // ids anyone uses, or that this Apply handed out
	claimed map[uint32]bool // our objects this Apply keeps or made
	ch      *Changes
	errs    *[]error
}

// applyGroups creates and replaces the nexthop objects cfg's groups need
// and returns the groups' routes and the objects to delete once routes
// have moved.
func (m *Manager) applyGroups(cfg Config, links map[string]linkState, nhs []Nexthop, have []Route, ch *Changes, errs *[]error) nexthopState {
	p := nexthopPlanner{m: m, table: cfg.table(), nhs: nhs, byID: map[uint32]Nexthop{}, have: have,
		taken: map[uint32]bool{}, claimed: map[uint32]bool{}, ch: ch, errs: errs}
	for _, nh := range nhs {
		p.byID[nh.ID], p.taken[nh.ID] = nh, true
	}
	st := nexthopState{replaced: map[uint32]Nexthop{}}
	fallBack := func(g resolvedGroup, err error) {
		*errs = append(*errs, fmt.Errorf("group %q: %w; routing over %s only", g.Name, err, g.members[0].link))
		st.routes = append(st.routes, plainRoutes(cfg, g)...)
	}
	var multi []resolvedGroup
	for _, g := range resolveGroups(cfg, links, errs) {
		if len(g.members) > 1 {
			multi = append(multi, g)
		} else {
			st.routes = append(st.routes, plainRoutes(cfg, g)...)
		}
	}
	var gt GroupType
	if len(multi) > 0 {
		var err error
		if gt, err = m.DetectGroupType(p.table); err != nil {
			for _, g := range multi {
				fallBack(g, err)
			}
			multi = nil
		}
	}
	if len(multi) > 0 {
		p.ensureFence()
	}
	singles := p.ensureSingles(multi)
	for _, g := range multi {
		g.members = slices.DeleteFunc(g.members, func(mb resolvedMember) bool { return singles[mb.index] == 0 })
		if len(g.members) < 2 {
			st.routes = append(st.routes, plainRoutes(cfg, g)...)
			continue
		}
		id, err := p.ensureGroup(g, gt == GroupResilient, singles, st.replaced)
		if err != nil {
			fallBack(g, err)
			continue
		}
		for _, pfx := range g.Routes {
			st.routes = append(st.routes, Route{Dst: pfx.Masked(), Kind: KindTunnel, Table: p.table, Metric: cfg.Metric, Nexthop: id})
		}
	}
	for _, nh := range ownedNexthops(nhs, p.table) {
		if !p.claimed[nh.ID] {
			st.del = append(st.del, nh)
		}
	}
	st.del = append(st.del, legacyNexthops(nhs, p.table)...)
	return st
}

// ensureFence makes the fence (see fenceID) before any other object of
// ours, unless something has its id already (which fences as well).
func (p *nexthopPlanner) ensureFence() {
	if p.taken[fenceID] {
		return
	}
	fence, err := p.m.addBlackhole(fenceID)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		// Not fatal: without it zebra may hand out one of our ids to one of
		// its groups, which only matters once a link of ours vanishes.
		*p.errs = append(*p.errs, fmt.Errorf("add nexthop fence %s: %w", fence, err))
		return
	}
	p.taken[fenceID] = true
	if err == nil {
		p.ch.NexthopsAdded = append(p.ch.NexthopsAdded, fence)
	}
}

// addBlackhole adds a blackhole nexthop object of ours: IPv6, or IPv4 where
// the kernel refuses IPv6 ones (disable_ipv6 on lo; the members are IPv4
// objects there too, memberFamily).
func (m *Manager) addBlackhole(id uint32) (Nexthop, error) {
	nh := Nexthop{ID: id, Protocol: RouteProtocol, Family: unix.AF_INET6, Blackhole: true}
	err := m.nh.NexthopAdd(nh)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		nh.Family = unix.AF_INET
		err = m.nh.NexthopAdd(nh)
	}
	return nh, err
}

// DetectGroupType finds out, once per Manager, which nexthop groups the
// kernel has: it makes a blackhole nexthop and a resilient group of it in
// table's id range (a hash-threshold group if the kernel refuses resilient
// ones), deletes both, and remembers the answer. ErrNoNexthops: none at
// all. Apply calls it when it first needs a group.
func (m *Manager) DetectGroupType(table int) (GroupType, error) {
	if table == 0 {
		table = MainTable
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.groupType != GroupTypeUnknown {
		return m.groupType, nil
	}
	if m.nh == nil || m.noNexthops {
		return GroupTypeUnknown, ErrNoNexthops
	}
	nhs, err := m.nh.NexthopList()
	if err == nil {
		taken := map[uint32]bool{}
		for _, nh := range nhs {
			taken[nh.ID] = true
		}
		if !taken[fenceID] {
			// Before the probe, the first object of ours (see fenceID).
			if _, ferr := m.addBlackhole(fenceID); ferr != nil && !errors.Is(ferr, unix.EEXIST) {
				m.log.Warn("nexthop fence not made; the next Apply tries again", "id", fenceID, "err", ferr)
			}
		}
		var hole Nexthop
		hole, err = m.addBlackhole(freeID(preferredID(table, "probe", "blackhole"), taken))
		taken[hole.ID] = true
		if err == nil {
			grp := Nexthop{ID: freeID(preferredID(table, "probe", "group"), taken), Protocol: RouteProtocol,
				Members: []NexthopMember{{ID: hole.ID, Weight: 1}}, Resilient: true}
			if err = m.nh.NexthopAdd(grp); err != nil && isNotSupported(err) {
				grp.Resilient = false
				err = m.nh.NexthopAdd(grp)
			}
			if err == nil {
				m.groupType = GroupHashThreshold
				if grp.Resilient {
					m.groupType = GroupResilient
				}
			}
			// Deleting the blackhole takes the group with it.
			if derr := m.nh.NexthopDel(hole.ID); derr != nil {
				m.log.Warn("nexthop probe left behind; the next Apply sweeps it", "nexthop", hole.String(), "err", derr)
			}
		}
	}
	if errors.Is(err, unix.EOPNOTSUPP) {
		m.noNexthops = true
		return GroupTypeUnknown, ErrNoNexthops
	}
	if err != nil {
		return GroupTypeUnknown, fmt.Errorf("detect kernel nexthop groups: %w", err)
	}
	if m.groupType == GroupHashThreshold {
		m.log.Info("kernel has no resilient nexthop groups (Linux 5.13+); using hash-threshold groups")
	}
	return m.groupType, nil
}

// GroupType returns what DetectGroupType found, GroupTypeUnknown before.
func (m *Manager) GroupType() GroupType {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.groupType
}

// resolveGroups sorts the groups by name and keeps the members whose
// links exist and are up (the kernel refuses nexthops on a link that is
// down); the others are reported.
func resolveGroups(cfg Config, links map[string]linkState, errs *[]error) []resolvedGroup {
	var out []resolvedGroup
	for _, g := range cfg.Groups {
		rg := resolvedGroup{Group: g}
		for _, mb := range g.Members {
			ls, ok := links[mb.Link]
			if !ok || !ls.up {
				*errs = append(*errs, fmt.Errorf("group %q: member %s left out: interface missing or down", g.Name, mb.Link))
				continue
			}
			rg.members = append(rg.members, resolvedMember{link: mb.Link, index: ls.index, weight: mb.Weight})
		}
		out = append(out, rg)
	}
	slices.SortFunc(out, func(a, b resolvedGroup) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// plainRoutes routes a group through its first member, or not at all.
func plainRoutes(cfg Config, g resolvedGroup) []Route {
	if len(g.members) == 0 {
		return nil
	}
	var out []Route
	for _, p := range g.Routes {
		out = append(out, Route{Dst: p.Masked(), Kind: KindTunnel, Link: g.members[0].index, Table: cfg.table(), Metric: cfg.Metric})
	}
	return out
}

// ensureSingles gives every link the groups use a single nexthop of ours
// and returns their ids by interface index; a link whose nexthop cannot be
// made is missing from the result.
func (p *nexthopPlanner) ensureSingles(groups []resolvedGroup) map[int]uint32 {
	names := map[int]string{}
	for _, g := range groups {
		for _, mb := range g.members {
			names[mb.index] = mb.link
		}
	}
	indexes := slices.Collect(maps.Keys(names))
	slices.SortFunc(indexes, func(a, b int) int { return strings.Compare(names[a], names[b]) })
	own := ownedNexthops(p.nhs, p.table)
	fam := p.m.memberFamily(slices.Collect(maps.Values(names)))
	out := map[int]uint32{}
	for _, idx := range indexes {
		// An existing single of ours on this link keeps its id.
		if i := slices.IndexFunc(own, func(nh Nexthop) bool { return !p.claimed[nh.ID] && nh.sameContent(memberNexthop(0, idx, fam)) }); i >= 0 {
			out[idx], p.claimed[own[i].ID] = own[i].ID, true
			continue
		}
		want := memberNexthop(freeID(preferredID(p.table, "link", names[idx]), p.taken), idx, fam)
		p.taken[want.ID] = true
		if err := p.m.nh.NexthopAdd(want); err != nil {
			*p.errs = append(*p.errs, fmt.Errorf("add nexthop %s (%s): %w; %s left out of its groups", want, names[idx], err, names[idx]))
			continue
		}
		out[idx], p.claimed[want.ID] = want.ID, true
		p.ch.NexthopsAdded = append(p.ch.NexthopsAdded, want)
	}
	return out
}

// memberNexthop is our single nexthop through a link, of family fam
// (memberFamily).
func memberNexthop(id uint32, link, fam int) Nexthop {
	return Nexthop{ID: id, Protocol: RouteProtocol, Family: fam, Link: link}
}

// memberFamily is the family of our single nexthops through links:
// AF_INET6, because IPv6 routes cannot use an IPv4 nexthop while IPv4
// routes can use an IPv6 one without a gateway, so one object serves both
// families; but AF_INET when IPv6 is disabled on one of the links
// (disable_ipv6 = 1, as on many IPv4-only hosts), where the kernel refuses
// an IPv6 nexthop ("IPv6 is disabled on nexthop device"): IPv6 routes have
// nothing to carry there.
func (m *Manager) memberFamily(links []string) int {
	if m.sys == nil {
		return unix.AF_INET6
	}
	for _, l := range links {
		if v, err := m.sys.Sysctl("net/ipv6/conf/" + l + "/disable_ipv6"); err == nil && v == "1" {
			return unix.AF_INET
		}
	}
	return unix.AF_INET6
}

// ensureGroup makes g's group object exist with exactly its members and
// returns its id. It keeps the id the group's routes already use (or, for
// a group no route uses, its preferred id) when that object is ours, of the
// right type, and used by no other group's routes.
func (p *nexthopPlanner) ensureGroup(g resolvedGroup, resilient bool, singles map[int]uint32, replaced map[uint32]Nexthop) (uint32, error) {
	want := Nexthop{Protocol: RouteProtocol, Resilient: resilient}
	for _, mb := range g.members {
		want.Members = append(want.Members, NexthopMember{ID: singles[mb.index], Weight: mb.weight})
	}
	slices.SortFunc(want.Members, func(a, b NexthopMember) int { return cmp.Compare(a.ID, b.ID) })
	if id := p.reusableGroup(g, resilient); id != 0 {
		want.ID, p.claimed[id] = id, true
		if p.byID[id].sameContent(want) {
			return id, nil
		}
		if err := p.m.nh.NexthopReplace(want); err != nil {
			return 0, fmt.Errorf("replace nexthop %s: %w", want, err)
		}
		replaced[id] = want
		p.ch.NexthopsReplaced = append(p.ch.NexthopsReplaced, want)
		return id, nil
	}
	want.ID = freeID(preferredID(p.table, "group", g.Name), p.taken)
	p.taken[want.ID] = true
	if err := p.m.nh.NexthopAdd(want); err != nil {
		return 0, fmt.Errorf("add nexthop %s: %w", want, err)
	}
	p.claimed[want.ID] = true
	p.ch.NexthopsAdded = append(p.ch.NexthopsAdded, want)
	return want.ID, nil
}

// reusableGroup returns the id of the group object g should keep, or 0.
func (p *nexthopPlanner) reusableGroup(g resolvedGroup, resilient bool) uint32 {
	mine := map[netip.Prefix]bool{}
	for _, pfx := range g.Routes {
		mine[pfx.Masked()] = true
	}
	usedByOthers := map[uint32]bool{}
	var usedByMe []uint32
	for _, r := range p.have {
		switch {
		case r.Nexthop == 0:
		case mine[r.Dst]:
			usedByMe = append(usedByMe, r.Nexthop)
		default:
			usedByOthers[r.Nexthop] = true
		}
	}
	slices.Sort(usedByMe)
	// Last, an object at the preferred id that no route uses.
	usedByMe = append(usedByMe, preferredID(p.table, "group", g.Name))
	for _, id := range usedByMe {
		nh, ok := p.byID[id]
		if ok && ownNexthop(nh, p.table) && nh.IsGroup() && nh.Resilient == resilient && !usedByOthers[id] && !p.claimed[id] {
			return id
		}
	}
	return 0
}

// freeID returns the first id from id on that nothing has taken.
func freeID(id uint32, taken map[uint32]bool) uint32 {
	for i := 0; taken[id] && i < 1<<idSlotBits; i++ {
		id = nextID(id)
	}
	return id
}

// deleteNexthops deletes our unwanted nexthop objects, groups first, except
// what a route we failed to move (kept) or a group that stays still uses.
func (m *Manager) deleteNexthops(st nexthopState, nhs []Nexthop, kept map[uint32]bool, ch *Changes, errs *[]error) {
	gone := map[uint32]bool{}
	del := slices.Clone(st.del)
	slices.SortStableFunc(del, func(a, b Nexthop) int { return boolInt(!a.IsGroup()) - boolInt(!b.IsGroup()) })
	for _, nh := range del {
		if kept[nh.ID] {
			continue
		}
		if !nh.IsGroup() && stillMember(nh.ID, nhs, st.replaced, gone) {
			continue
		}
		if err := m.nh.NexthopDel(nh.ID); err != nil && !errors.Is(err, unix.ENOENT) {
			*errs = append(*errs, fmt.Errorf("delete nexthop %s: %w", nh, err))
			continue
		}
		gone[nh.ID] = true
		ch.NexthopsGone = append(ch.NexthopsGone, nh)
	}
}

// stillMember reports whether a group that stays (not deleted, with its
// content after any replace) has id as a member.
func stillMember(id uint32, nhs []Nexthop, replaced map[uint32]Nexthop, gone map[uint32]bool) bool {
	for _, g := range nhs {
		if !g.IsGroup() || gone[g.ID] {
			continue
		}
		if r, ok := replaced[g.ID]; ok {
			g = r
		}
		if slices.ContainsFunc(g.Members, func(mb NexthopMember) bool { return mb.ID == id }) {
			return true
		}
	}
	return false
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
