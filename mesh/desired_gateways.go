package mesh

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/records"
	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/dcmesh/dcmesh/wg"
)

// maxLinkName is Linux's limit on an interface name (IFNAMSIZ - 1).
const maxLinkName = 15

// gatewayInputs is what the multi-gateway part of the desired state needs
// beyond the sites.
type gatewayInputs struct {
	// Local is this gateway's index in its site (its certificate's): a
	// remote gateway holds us on its slot Local, listening on its announced
	// port + Local.
	Local uint8
	// Healthy says, by node name (records.Site.Node), which remote gateways
	// of multi-gateway sites may carry traffic now (gatewayHealth). A
	// gateway missing is unhealthy. One-gateway sites do not consult it.
	Healthy map[string]bool
}

// slotLink is the WireGuard interface of slot k: iface itself for slot 0,
// iface + "g" + k after.
func slotLink(iface string, k int) (string, error) {
	if k == 0 {
		return iface, nil
	}
	name := iface + "g" + strconv.Itoa(k)
	if len(name) > maxLinkName {
		return "", fmt.Errorf("interface %q: a remote site has a gateway %d, which this gateway holds on a WireGuard interface %q, longer than Linux's %d bytes; shorten interface to at most %d bytes",
			iface, k, name, maxLinkName, maxLinkName-(len(name)-len(iface)))
	}
	return name, nil
}

// gatewayEntry is a remote gateway that computeDesiredGateways keeps, with
// the prefixes it may have.
type gatewayEntry struct {
	site    records.Site
	allowed []netip.Prefix
}

// desiredBuilder carries one computeDesiredGateways.
type desiredBuilder struct {
	cfg   *config.Config
	key   wg.PrivateKey
	self  wg.PublicKey
	in    gatewayInputs
	d     desiredState
	slots []wg.Config // by slot
	links []string    // by slot
	// remote are the prefixes routed into slot 0's link (Routes): the
	// static peers' first (static of them), then those of one-gateway
	// sites on slot 0 and the overlay addresses of slot-0 gateways.
	remote []netip.Prefix
	static int
	// failClosed are the prefixes routed otherwise (groups), each once.
	failClosed []netip.Prefix
	groups     []netconfig.Group
	names      map[string]bool
	keys       map[wg.PublicKey]bool
}

func newDesiredBuilder(cfg *config.Config, key wg.PrivateKey, in gatewayInputs) *desiredBuilder {
	return &desiredBuilder{cfg: cfg, key: key, self: key.Public(), in: in, // a scalar multiplication: once, not per site
		names: map[string]bool{}, keys: map[wg.PublicKey]bool{}}
}

// addStatic puts the static peers on slot 0.
func (b *desiredBuilder) addStatic() {
	b.slots = []wg.Config{{PrivateKey: b.key, ListenPort: b.cfg.ListenPort}}
	b.links = []string{b.cfg.Interface}
	for _, p := range b.cfg.Peers {
		b.slots[0].Peers = append(b.slots[0].Peers, wg.Peer{
			PublicKey:           p.PublicKey,
			Endpoint:            p.Endpoint,
			AllowedIPs:          p.AllowedPrefixes,
			PersistentKeepalive: p.PersistentKeepalive,
		})
		b.remote = append(b.remote, p.AllowedPrefixes...)
		b.names[p.Name] = true
		b.keys[p.PublicKey] = true
	}
	b.static = len(b.remote)
}

// accept drops the gateways whose name or key a static peer (or an earlier
// gateway, or this one) has, and the prefixes that overlap a static peer's.
func (b *desiredBuilder) accept(sites []records.Site) []gatewayEntry {
	var out []gatewayEntry
	for _, s := range sites {
		if b.names[s.Name] || b.keys[s.PublicKey] || s.PublicKey == b.self || (!s.Next.IsZero() && (b.keys[s.Next] || s.Next == b.self)) {
			b.d.Dropped = append(b.d.Dropped, s.Name+": name or WireGuard key of a static peer")
			continue
		}
		var allowed []netip.Prefix
		for _, p := range s.Prefixes {
			if config.OverlapsAny(p, b.remote[:b.static]) {
				b.d.Dropped = append(b.d.Dropped, s.Name+" "+p.String()+": overlaps a static peer")
				continue
			}
			allowed = append(allowed, p)
		}
		b.keys[s.PublicKey] = true
		if !s.Next.IsZero() {
			b.keys[s.Next] = true
		}
		out = append(out, gatewayEntry{site: s, allowed: allowed})
	}
	return out
}

// openSlots makes K = 1 + the largest gateway index slots; when their
// interface names are too long, only slot 0, without the other gateways.
func (b *desiredBuilder) openSlots(entries []gatewayEntry) []gatewayEntry {
	k := 1
	for _, e := range entries {
		k = max(k, int(e.site.Gateway)+1)
	}
	for i := 1; i < k; i++ {
		name, err := slotLink(b.cfg.Interface, i)
		if err != nil {
			return slices.DeleteFunc(entries, func(e gatewayEntry) bool {
				if e.site.Gateway == 0 {
					return false
				}
				b.d.Dropped = append(b.d.Dropped, e.site.Node()+": "+err.Error())
				return true
			})
		}
		b.links = append(b.links, name)
		b.slots = append(b.slots, wg.Config{PrivateKey: b.key, ListenPort: b.cfg.ListenPort + i})
	}
	return entries
}

// addPeers puts a gateway (and its next key while it rotates) on its slot,
// with the port where it holds us: its own + our gateway index.
func (b *desiredBuilder) addPeers(e gatewayEntry, cutover map[wg.PublicKey]bool) {
	s := e.site
	slot := &b.slots[s.Gateway]
	ep := portOffset(s.Endpoint, int(b.in.Local))
	current := s.PublicKey
	if !s.Next.IsZero() {
		if cutover[s.Next] {
			current = s.Next
		} else {
			slot.Peers = append(slot.Peers, wg.Peer{PublicKey: s.Next, Endpoint: ep, PresharedKey: s.NextPSK})
		}
	}
	psk := s.PSK
	if current == s.Next {
		psk = s.NextPSK
	}
	slot.Peers = append(slot.Peers, wg.Peer{
		PublicKey:           current,
		Endpoint:            ep,
		AllowedIPs:          e.allowed,
		PersistentKeepalive: b.cfg.PersistentKeepalive,
		PresharedKey:        psk,
	})
}

// routeOneGateway routes a one-gateway site's prefixes into its slot's
// link, whatever the probes say: on slot 0 exactly today's routes.
func (b *desiredBuilder) routeOneGateway(e gatewayEntry) {
	if e.site.Gateway == 0 {
		b.remote = append(b.remote, e.allowed...)
		return
	}
	b.routeOnSlot(e.site.Name, int(e.site.Gateway), e.allowed)
}

// routeOnSlot routes prefixes into slot k's link (a group of one member is
// a plain route).
func (b *desiredBuilder) routeOnSlot(name string, k int, prefixes []netip.Prefix) {
	if len(prefixes) == 0 {
		return
	}
	b.groups = append(b.groups, netconfig.Group{Name: name, Members: []netconfig.Member{{Link: b.links[k], Weight: 1}}, Routes: prefixes})
	b.failClosed = append(b.failClosed, prefixes...)
}

// routeOverlay routes the overlay address of a gateway of a multi-gateway
// site into its own slot's link: the probes to it must take that gateway.
func (b *desiredBuilder) routeOverlay(e gatewayEntry) {
	i := slices.IndexFunc(e.allowed, func(p netip.Prefix) bool { return isOverlay(e.site, p) })
	if i < 0 {
		return
	}
	ov := e.allowed[i : i+1]
	if e.site.Gateway == 0 {
		b.remote = append(b.remote, ov...)
		return
	}
	b.routeOnSlot(e.site.Node()+" overlay", int(e.site.Gateway), ov)
}

// portOffset moves ep's port by delta: a remote gateway's announced
// endpoint + our gateway index is where it holds us.
func portOffset(ep netip.AddrPort, delta int) netip.AddrPort {
	if !ep.IsValid() || delta == 0 {
		return ep
	}
	return netip.AddrPortFrom(ep.Addr(), uint16(int(ep.Port())+delta))
}

func isOverlay(s records.Site, p netip.Prefix) bool {
	return s.Overlay.IsValid() && p.Addr() == s.Overlay && p.Bits() == s.Overlay.BitLen()
}

// sharedPrefix is a prefix of a multi-gateway site with the gateways that
// hold it.
type sharedPrefix struct {
	site     string
	prefix   netip.Prefix
	gateways []records.Site
}

// sharedPrefixes lists, in the order first seen, every prefix of a
// multi-gateway site (its gateways' overlay addresses aside) with the
// gateways that hold it.
func sharedPrefixes(entries []gatewayEntry, perSite map[string]int) []*sharedPrefix {
	var out []*sharedPrefix
	seen := map[string]*sharedPrefix{}
	for _, e := range entries {
		if perSite[e.site.Name] < 2 {
			continue
		}
		for _, p := range e.allowed {
			if isOverlay(e.site, p) {
				continue
			}
			key := e.site.Name + " " + p.String()
			sp := seen[key]
			if sp == nil {
				sp = &sharedPrefix{site: e.site.Name, prefix: p}
				seen[key] = sp
				out = append(out, sp)
			}
			sp.gateways = append(sp.gateways, e.site)
		}
	}
	return out
}

// routeGroups sends each prefix of a multi-gateway site over a group of the
// gateways that hold it: normally all of them, one group named after the
// site; a prefix only some hold goes over a group named after the site and
// those gateways.
func (b *desiredBuilder) routeGroups(entries []gatewayEntry, perSite map[string]int) {
	type bucket struct {
		name     string
		gateways []records.Site
		prefixes []netip.Prefix
	}
	var order []*bucket
	byName := map[string]*bucket{}
	for _, sp := range sharedPrefixes(entries, perSite) {
		name := sp.site
		if len(sp.gateways) < perSite[sp.site] {
			var nodes []string
			for _, g := range sp.gateways {
				nodes = append(nodes, g.Node())
			}
			name += " " + strings.Join(nodes, ",")
		}
		bk := byName[name]
		if bk == nil {
			bk = &bucket{name: name, gateways: sp.gateways}
			byName[name] = bk
			order = append(order, bk)
		}
		bk.prefixes = append(bk.prefixes, sp.prefix)
	}
	for _, bk := range order {
		members := groupMembers(bk.gateways, b.links, b.in.Healthy)
		b.groups = append(b.groups, netconfig.Group{Name: bk.name, Members: members, Routes: bk.prefixes})
		b.failClosed = append(b.failClosed, bk.prefixes...)
		b.noteMembers(bk.gateways, members)
	}
}

// noteMembers records in d.InGroup which of gateways are among members.
func (b *desiredBuilder) noteMembers(gateways []records.Site, members []netconfig.Member) {
	if b.d.InGroup == nil {
		b.d.InGroup = map[string]bool{}
	}
	for _, g := range gateways {
		in := slices.ContainsFunc(members, func(m netconfig.Member) bool { return m.Link == b.links[g.Gateway] })
		b.d.InGroup[g.Node()] = b.d.InGroup[g.Node()] || in
	}
}

// groupMembers are the gateways that carry a multi-gateway site's traffic
// now: the healthy, not draining, active (weight > 0) ones with their
// weights; if there are none, the healthy standbys alike; else none.
func groupMembers(gateways []records.Site, links []string, healthy map[string]bool) []netconfig.Member {
	var active, standby, drained []netconfig.Member
	gws := slices.Clone(gateways)
	slices.SortFunc(gws, func(a, b records.Site) int { return cmp.Compare(a.Gateway, b.Gateway) })
	for _, g := range gws {
		if !healthy[g.Node()] {
			continue
		}
		if g.Drain {
			drained = append(drained, netconfig.Member{Link: links[g.Gateway], Weight: 1})
			continue
		}
		if g.Standby || g.Weight <= 0 {
			standby = append(standby, netconfig.Member{Link: links[g.Gateway], Weight: 1})
			continue
		}
		active = append(active, netconfig.Member{Link: links[g.Gateway], Weight: min(g.Weight, 256)})
	}
	if len(active) > 0 {
		return active
	}
	if len(standby) > 0 {
		return standby
	}
	// Every healthy gateway drains: drain means "send to the others", and
	// there are none, so keep sending to them rather than drop the site
	// (draining the last gateway in service must not take the site off
	// the backbone; its fabric export is degraded already).
	return drained
}

// finish assembles the desired state; with one slot exactly the
// one-gateway layout.
func (b *desiredBuilder) finish(mtu int) desiredState {
	d := b.d
	d.WG, d.Slots = b.slots[0], b.slots[1:]
	if len(d.Slots) == 0 {
		d.Slots = nil
	}
	failClosed := b.remote
	if len(b.failClosed) > 0 {
		failClosed = append(slices.Clone(b.remote), b.failClosed...)
	}
	d.Net = netconfig.Config{
		Link:       b.cfg.Interface,
		MTU:        mtu,
		Addresses:  []netip.Prefix{b.cfg.OverlayAddress},
		Table:      b.cfg.RouteTable,
		Metric:     b.cfg.RouteMetric,
		Routes:     b.remote,
		FailClosed: failClosed,
		Groups:     b.groups,
	}
	if len(b.links) > 1 {
		d.Net.ExtraLinks = b.links[1:]
		d.Net.LinkSysctls = netconfig.GatewayLinkSysctls()
	}
	return d
}
