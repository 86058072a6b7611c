package mesh

import (
	"net/netip"
	"time"

	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/mesh/probe"
	"github.com/dcmesh/dcmesh/mesh/records"
	"github.com/dcmesh/dcmesh/wg"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// uplinks is the agent's side of endpoint failover (uplinks.go): one
// chooser per remote gossip site, stepped by the loop on probe changes and
// on its own timer.
type uplinks struct {
	choosers map[string]*uplinkChooser
	timer    *time.Timer
}

func newUplinks() *uplinks {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &uplinks{choosers: map[string]*uplinkChooser{}, timer: t}
}

// uplinkTimerC is the loop's wake-up for uplink trials and holds (nil,
// never ready, before the runtime has uplinks).
func (rt *siteRuntime) uplinkTimerC() <-chan time.Time {
	if rt.uplinks == nil {
		return nil
	}
	return rt.uplinks.timer.C
}

// probeChanges is the prober's change notification (nil without probes).
func (rt *siteRuntime) probeChanges() <-chan struct{} {
	if rt.prober == nil {
		return nil
	}
	return rt.prober.Changes()
}

// useUplinks keeps a chooser per site and returns sites with Endpoint set to
// the one each chooser picked (a copy: the store's sites are not changed).
// dev is the device as just read (nil if the read failed): where it roamed
// to another of a site's endpoints, the chooser adopts it.
func (a *Agent) useUplinks(rt *siteRuntime, sites []records.Site, dev *wgtypes.Device) []records.Site {
	if rt.uplinks == nil {
		rt.uplinks = newUplinks()
	}
	h := rt.cfg.Health
	timers := uplinkTimersFor(h.Interval, h.Multiplier, h.UplinkHold)
	out := make([]records.Site, len(sites))
	seen := map[string]bool{}
	now := time.Now()
	devEP := deviceEndpoints(dev)
	for i, s := range sites {
		eps := s.Endpoints
		if len(eps) == 0 && s.Endpoint.IsValid() {
			eps = []netip.AddrPort{s.Endpoint}
		}
		c, ok := rt.uplinks.choosers[s.Node()]
		if !ok {
			c = newUplinkChooser(timers, eps)
			rt.uplinks.choosers[s.Node()] = c
		} else {
			c.SetEndpoints(now, eps)
		}
		// The device holds the gateway at its port + our gateway index.
		if ep, ok := devEP[s.PublicKey]; ok && c.Adopt(now, portOffset(ep, -int(rt.localGateway()))) {
			a.log.Info("peer endpoint follows the peer's packets to another of its uplinks", "peer", s.Node(), "to", ep, "failovers", c.failovers)
		}
		seen[s.Node()] = true
		out[i] = s
		if cur := c.Current(); cur.IsValid() {
			out[i].Endpoint = cur
		}
	}
	for name := range rt.uplinks.choosers {
		if !seen[name] {
			delete(rt.uplinks.choosers, name)
		}
	}
	rt.armUplinks(now) // an adoption starts a hold
	return out
}

// uplinkSessionOf reads a probe session for the chooser: up is the raw BFD
// state (the probes' anti-flap hold is for routing, and a trial must end
// as soon as the session re-forms); down once it was up before or had
// probeGrace to come up.
func uplinkSessionOf(ps probe.PeerState, ok bool, since, now time.Time) uplinkSession {
	switch {
	case !ok:
		return sessionUnknown
	case ps.Session == probe.StateUp:
		return sessionUp
	case ps.Downs > 0 || now.Sub(since) > probeGrace:
		return sessionDown
	}
	return sessionUnknown
}

// stepUplinks runs every chooser and gives the device each endpoint that
// changed, one device call per switch; then it arms the timer.
func (a *Agent) stepUplinks(rt *siteRuntime) {
	if rt.uplinks == nil || rt.prober == nil {
		return
	}
	now := time.Now()
	states := rt.probeStates()
	devEP := a.deviceEndpointsIfNeeded(rt, now)
	for _, s := range rt.lastSites {
		c := rt.uplinks.choosers[s.Node()]
		if c == nil {
			continue
		}
		ps, ok := states[s.Node()]
		was := c.Current()
		if c.Step(now, uplinkSessionOf(ps, ok, rt.probing[s.Node()], now), devEP[s.Node()]) {
			a.switchEndpoint(rt, s, was, c)
		}
	}
	rt.armUplinks(now)
}

// armUplinks sets the timer to the next chooser that is due.
func (rt *siteRuntime) armUplinks(now time.Time) {
	next := nextUplinkDue(now, rt.cfg.Health.Interval, rt.uplinks.choosers)
	rt.uplinks.timer.Stop()
	if !next.IsZero() {
		rt.uplinks.timer.Reset(max(next.Sub(now), 0))
	}
}

// nextUplinkDue is when the choosers need a Step next (zero: only on a
// probe change), polling the probes every interval during a trial.
func nextUplinkDue(now time.Time, interval time.Duration, choosers map[string]*uplinkChooser) time.Time {
	var next time.Time
	poll := now.Add(max(interval, probe.MinInterval))
	for _, c := range choosers {
		due := c.Due()
		if !due.IsZero() && !due.After(now) {
			// Due but nothing to do yet (a hold over while the session is
			// not up): look again in a probe interval, not at once.
			due = poll
		}
		if c.Trialling() {
			due = earliest(due, poll)
		}
		next = earliest(next, due)
	}
	return next
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// deviceEndpointsIfNeeded reads the device's endpoint of each site, only if
// a return trial ends now (one device read).
func (a *Agent) deviceEndpointsIfNeeded(rt *siteRuntime, now time.Time) map[string]netip.AddrPort {
	need := false
	for _, c := range rt.uplinks.choosers {
		need = need || c.NeedsDevice(now)
	}
	if !need {
		return nil
	}
	dev, err := rt.wgc.Device(rt.cfg.Interface)
	if err != nil {
		a.log.Warn("cannot read the WireGuard device to judge an uplink trial; staying on the fallback", "err", err)
		return nil
	}
	byKey := deviceEndpoints(mergedDevice(dev, rt.readSlotDevices()))
	for k, ep := range byKey {
		byKey[k] = portOffset(ep, -int(rt.localGateway())) // as the records say
	}
	out := map[string]netip.AddrPort{}
	for _, s := range rt.lastSites {
		if ep, ok := byKey[s.PublicKey]; ok {
			out[s.Node()] = ep
		} else if ep, ok := byKey[s.Next]; ok && !s.Next.IsZero() {
			out[s.Node()] = ep
		}
	}
	return out
}

// deviceEndpoints is each peer's endpoint on dev (nil dev: none).
func deviceEndpoints(dev *wgtypes.Device) map[wg.PublicKey]netip.AddrPort {
	out := map[wg.PublicKey]netip.AddrPort{}
	if dev == nil {
		return out
	}
	for _, p := range dev.Peers {
		if p.Endpoint != nil {
			ap := p.Endpoint.AddrPort()
			out[wg.PublicKey(p.PublicKey)] = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
	}
	return out
}

// switchEndpoint gives the device the chooser's endpoint for site s in one
// call that also sends a keepalive there (wg.SetEndpoint), with the site's
// pre-installed next key following quietly.
func (a *Agent) switchEndpoint(rt *siteRuntime, s records.Site, was netip.AddrPort, c *uplinkChooser) {
	to := c.Current()
	var quiet []wg.PublicKey
	if !s.Next.IsZero() {
		quiet = append(quiet, s.Next)
	}
	key := s.PublicKey
	if rt.rot.CutOvers()[s.Next] {
		key, quiet = s.Next, []wg.PublicKey{s.PublicKey}
	}
	keepalive := rt.cfg.PersistentKeepalive
	for _, p := range rt.lastWG.Peers {
		if p.PublicKey == key {
			keepalive = p.PersistentKeepalive
		}
	}
	iface := rt.cfg.Interface
	if links := rt.slotLinks(); int(s.Gateway) < len(links) {
		iface = links[s.Gateway]
	}
	if err := wg.SetEndpoint(rt.wgc, iface, key, portOffset(to, int(rt.localGateway())), keepalive, quiet...); err != nil {
		a.log.Error("cannot switch a peer's endpoint; the next reconcile retries", "peer", s.Node(), "to", to, "err", err)
		return
	}
	a.log.Info("peer endpoint switched", "peer", s.Node(), "from", was, "to", to, "phase", c.phase.String(), "failovers", c.failovers)
}

// uplinkStatus describes a site's uplinks for status (nil for sites the
// agent does not choose for).
func (rt *siteRuntime) uplinkStatus(site string) *control.UplinkStatus {
	if rt.uplinks == nil {
		return nil
	}
	c := rt.uplinks.choosers[site]
	if c == nil {
		return nil
	}
	u := &control.UplinkStatus{Endpoints: []string{}, InUse: c.Current().String(), Failovers: c.failovers, Phase: c.phase.String()}
	for _, e := range c.endpoints {
		u.Endpoints = append(u.Endpoints, e.String())
	}
	return u
}
