package mesh

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/mesh/probe"
	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/dcmesh/dcmesh/wg"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// rejectAfterTime is WireGuard's session lifetime: a handshake older than
// this means no usable session.
const rejectAfterTime = 180 * time.Second

// buildStatus reads the device and the kernel and describes everything
// (control.Status: the wire type `dcmesh status` prints).
func (a *Agent) buildStatus(rt *siteRuntime) (control.Status, error) {
	now := time.Now()
	st := a.statusHeader(rt, now)
	dev, err := rt.wgc.Device(rt.cfg.Interface)
	if err != nil {
		return st, fmt.Errorf("read WireGuard device: %w", err)
	}
	dev = mergedDevice(dev, rt.readSlotDevices()) // every slot's peers
	marks, err := a.readRouteMarks(rt)
	if err != nil {
		return st, err
	}
	v := peerView{ids: peerIdentities(rt), members: gossipStatus(rt, &st), probes: rt.probeStates(),
		probing: rt.probing, keepalive: map[wg.PublicKey]time.Duration{}, marks: marks, now: now}
	for _, p := range rt.lastWG.Peers {
		v.keepalive[p.PublicKey] = p.PersistentKeepalive
	}
	for _, p := range dev.Peers {
		st.Peers = append(st.Peers, rt.withUplinksAndShadows(v.peer(p)))
	}
	slices.SortFunc(st.Peers, func(a, b control.PeerStatus) int {
		return cmp.Or(cmp.Compare(a.Site, b.Site), cmp.Compare(a.Gateway, b.Gateway), cmp.Compare(a.Role, b.Role))
	})
	st.Routes = routeStatus(rt, marks)
	markDraining(rt, st.Peers)
	markGateways(rt, st.Peers)
	return st, nil
}

// markGateways sets each peer's interface (its gateway's slot) and, for the
// gateways of multi-gateway sites, whether the last reconcile put them in
// their site's nexthop group.
func markGateways(rt *siteRuntime, peers []control.PeerStatus) {
	for i := range peers {
		p := &peers[i]
		p.Interface = rt.cfg.Interface
		if p.Source != control.SourceGossip {
			continue
		}
		if l, err := slotLink(rt.cfg.Interface, int(p.Gateway)); err == nil {
			p.Interface = l
		}
		if in, ok := rt.lastInGroup[p.Name()]; ok {
			p.InGroup = &in
		}
	}
}

// statusHeader is the part of the status that needs neither the device nor
// the kernel: the site, its key and rotation, and the counters.
func (a *Agent) statusHeader(rt *siteRuntime, now time.Time) control.Status {
	cfg := rt.cfg
	st := control.Status{
		Schema: control.StatusSchema, GeneratedAt: now.UTC(), Site: cfg.Site, Interface: cfg.Interface,
		Backend: string(rt.dev.Backend()), ListenPort: cfg.ListenPort, PublicKey: rt.rot.Key().Public().String(),
		RecordsRejected: map[string]uint64{},
		Key: control.KeyStatus{Epoch: rt.rot.State().Epoch, Since: rt.rot.State().KeySince.UTC(), AgeSeconds: int64(now.Sub(rt.rot.State().KeySince).Seconds()),
			RotationPhase: string(rt.rot.State().Phase), LastResult: rt.rot.State().LastResult},
		Gossip: control.GossipStatus{Enabled: rt.gossip != nil, MembersByState: map[control.MemberState]int{}, Members: []control.Member{}},
		Peers:  []control.PeerStatus{}, StateDir: control.StateDirStatus{Path: string(cfg.StateDir), Problems: []string{}},
	}
	for _, s := range control.MemberStates {
		st.Gossip.MembersByState[s] = 0
	}
	if rt.disk != nil {
		st.StateDir.Problems = rt.disk.problems()
	}
	st.Untrusted = a.untrustedStatus(rt)
	st.Trust = trustStatus(rt, now)
	st.Gossip.Key = gossipKeyStatus(rt)
	st.Drain = rt.drain.status()
	if !rt.rot.NextRotation().IsZero() {
		nr := rt.rot.NextRotation().UTC()
		st.Key.NextRotation = &nr
	}
	return st
}

func (a *Agent) untrustedStatus(rt *siteRuntime) control.UntrustedStatus {
	u := control.UntrustedStatus{GossipStreamsRefused: map[string]uint64{}, GossipDropped: map[string]uint64{}}
	if rt.gossip != nil {
		r := rt.gossip.Refused()
		u.GossipStreamsRefused = map[string]uint64{"too_many": r.TooMany, "per_source": r.PerSource, "too_large": r.TooLarge,
			"budget": r.Budget, "timeout": r.Timeout, "malformed": r.Malformed, "unauthenticated": r.Unauthenticated}
		d := rt.gossip.Dropped()
		u.GossipDropped = map[string]uint64{"states": d.States, "messages": d.Messages, "joins": d.Joins}
		u.GossipMalformed = rt.gossip.Malformed()
		u.GossipSquatters = rt.gossip.RosterStats().Squatters
		u.UncertifiedNodes = rt.gossip.Uncertified()
	}
	if rt.in != nil {
		u.RecordsSkipped = rt.in.Skipped()
	}
	if a.ctl != nil {
		c := a.ctl.Stats()
		u.ControlRefused = c.Refused + c.Evicted
	}
	return u
}

// routeMarks are the destinations of our tunnel and fail-closed routes the
// kernel holds, as the configuration wants them (link and metrics).
type routeMarks struct{ tunnel, failClosed map[netip.Prefix]bool }

func (a *Agent) readRouteMarks(rt *siteRuntime) (routeMarks, error) {
	cfg := rt.cfg
	owned, err := rt.net.OwnedRoutes(cfg.RouteTable)
	if err != nil {
		return routeMarks{}, err
	}
	ours := map[int]bool{} // every slot's link
	for _, name := range rt.slotLinks() {
		if l, err := rt.nl.LinkByName(name); err == nil {
			ours[l.Attrs().Index] = true
		}
	}
	m := routeMarks{tunnel: map[netip.Prefix]bool{}, failClosed: map[netip.Prefix]bool{}}
	for _, r := range owned {
		// A multi-gateway site's prefixes go over a nexthop group of ours.
		if r.Kind == netconfig.KindTunnel && (ours[r.Link] || r.Nexthop != 0) && r.Metric == rt.tunnelMetric() {
			m.tunnel[r.Dst] = true
		}
		if r.Kind == netconfig.KindUnreachable && r.Metric == cfg.RouteMetric+1 {
			m.failClosed[r.Dst] = true
		}
	}
	return m, nil
}

// gossipStatus fills the membership and rejection counts into st and returns
// each member's state by name. A member whose last record said goodbye and
// that is no longer alive is listed as left.
func gossipStatus(rt *siteRuntime, st *control.Status) map[string]control.MemberState {
	members := map[string]control.MemberState{}
	if rt.gossip == nil {
		return members
	}
	for _, m := range rt.gossip.Members() {
		state := control.MemberState(m.State)
		if sr, ok := rt.store.Record(m.Name); ok && sr.Leaving && state != control.MemberAlive {
			state = control.MemberLeft
		}
		st.Gossip.Members = append(st.Gossip.Members, control.Member{Name: m.Name, Addr: m.Addr, State: state})
		members[m.Name] = state
		st.Gossip.MembersByState[state]++
	}
	for r, n := range rt.store.Rejected() {
		st.RecordsRejected[string(r)] = n
	}
	return members
}

// peerIdentity is who a key on the device is: node is the gateway's node
// name (the site name of gateway 0 and of a static peer), what gossip
// members, probes and uplinks are keyed by.
type peerIdentity struct {
	site    string
	gateway uint8
	node    string
	source  control.Source
	role    control.Role
}

func peerIdentities(rt *siteRuntime) map[wg.PublicKey]peerIdentity {
	ids := map[wg.PublicKey]peerIdentity{}
	for _, p := range rt.cfg.Peers {
		ids[p.PublicKey] = peerIdentity{p.Name, 0, p.Name, control.SourceStatic, control.RoleCurrent}
	}
	for _, s := range rt.lastSites {
		ids[s.PublicKey] = peerIdentity{s.Name, s.Gateway, s.Node(), control.SourceGossip, control.RoleCurrent}
		if !s.Next.IsZero() {
			role := control.RoleNext
			if rt.rot.CutOvers()[s.Next] {
				role = control.RoleCurrent
			}
			ids[s.Next] = peerIdentity{s.Name, s.Gateway, s.Node(), control.SourceGossip, role}
		}
	}
	return ids
}

// peerView is what the agent knows about the peers on its device.
type peerView struct {
	ids       map[wg.PublicKey]peerIdentity
	members   map[string]control.MemberState
	probes    map[string]probe.PeerState
	probing   map[string]time.Time // node name → when its probe session started
	keepalive map[wg.PublicKey]time.Duration
	marks     routeMarks
	now       time.Time
}

// peer describes one peer of the device.
func (v *peerView) peer(p wgtypes.Peer) control.PeerStatus {
	now := v.now
	k := wg.PublicKey(p.PublicKey)
	w, ok := v.ids[k]
	if !ok {
		w = peerIdentity{source: control.SourceUnknown, role: control.RoleCurrent}
	}
	ps := control.PeerStatus{Site: w.site, Gateway: w.gateway, Node: w.node, Source: w.source, Role: w.role, PublicKey: k.String(),
		RxBytes: p.ReceiveBytes, TxBytes: p.TransmitBytes, AllowedIPs: []string{}}
	if p.Endpoint != nil {
		ps.Endpoint = p.Endpoint.String()
	}
	if !p.LastHandshakeTime.IsZero() {
		hs := p.LastHandshakeTime.UTC()
		age := int64(now.Sub(hs).Seconds())
		ps.LastHandshake, ps.HandshakeAgeSeconds = &hs, &age
	}
	var pr *probe.PeerState
	if s, ok := v.probes[w.node]; ok && w.role == control.RoleCurrent && w.source == control.SourceGossip {
		pr = &s
		ps.Probe = probeStatus(s)
	}
	ps.State = peerState(now, p.LastHandshakeTime, v.keepalive[k], pr, v.probing[w.node])
	switch {
	case w.source == control.SourceStatic:
		ps.GossipState = control.MemberStatic
	case v.members[w.node] != "":
		ps.GossipState = v.members[w.node]
	default:
		ps.GossipState = control.MemberUnknown
	}
	ps.RoutesProgrammed = true
	var allowed []netip.Prefix
	for _, n := range p.AllowedIPs {
		a, _ := netip.AddrFromSlice(n.IP)
		ones, _ := n.Mask.Size()
		pfx := netip.PrefixFrom(a.Unmap(), ones)
		allowed = append(allowed, pfx)
		if !v.marks.tunnel[pfx] || !v.marks.failClosed[pfx] {
			ps.RoutesProgrammed = false
		}
	}
	slices.SortFunc(allowed, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), a.Bits()-b.Bits())
	})
	for _, pfx := range allowed {
		ps.AllowedIPs = append(ps.AllowedIPs, pfx.String())
	}
	return ps
}

// routeStatus counts the routes the last desired state wants and those of
// them the kernel holds.
func routeStatus(rt *siteRuntime, marks routeMarks) control.RouteStatus {
	// The last desired kernel state: a multi-gateway site's prefixes are
	// wanted while its group has a member (else the fail-closed route
	// answers, as it should).
	net := rt.shadow.net
	want := slices.Clone(net.Routes)
	for _, g := range net.Groups {
		if len(g.Members) > 0 {
			want = append(want, g.Routes...)
		}
	}
	routes, failClosed := uniquePrefixes(want), uniquePrefixes(net.FailClosed)
	rs := control.RouteStatus{Table: rt.cfg.RouteTable, Desired: len(routes), FailClosedDesired: len(failClosed)}
	for _, p := range routes {
		if marks.tunnel[p] {
			rs.Programmed++
		}
	}
	for _, p := range failClosed {
		if marks.failClosed[p] {
			rs.FailClosedProgrammed++
		}
	}
	return rs
}

func uniquePrefixes(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		p = p.Masked()
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}
