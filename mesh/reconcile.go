package mesh

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/records"
	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/dcmesh/dcmesh/wg"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// firstHandshakeDelay staggers the first handshake of a new pair. When two
// sites learn each other at the same moment, both initiate; the crossing
// initiations cancel each other and WireGuard retries only after 5 s. So the
// site with the higher public key holds back its keepalive (which is what
// initiates) for this long: longer than a handshake round trip, so that if
// the other side initiated, the session exists by then and nothing crosses.
const firstHandshakeDelay = 500 * time.Millisecond

// reconcile applies the desired state and collects what failed (at a
// resync, a kick, a commit of the store, a reload): compute, apply the link
// and routes (the link must be up before peers are configured), then the
// WireGuard peers, then tell the rest what was applied.
func (a *Agent) reconcile(rt *siteRuntime) error {
	start := time.Now()
	p, release := a.plan(rt)
	defer release()
	var errs []error
	if err := a.openSlotDevices(rt, p.d.Net.ExtraLinks); err != nil {
		errs = append(errs, err)
	}
	if err := a.applyNet(rt, p); err != nil {
		errs = append(errs, err)
	}
	if err := a.applyWG(rt, p); err != nil {
		errs = append(errs, err)
	}
	if err := a.applySlots(rt, p); err != nil {
		errs = append(errs, err)
	}
	a.applied(rt, p, len(errs) == 0, start)
	return errors.Join(errs...)
}

// firstReconcile is the reconcile at start: it also brings the device up,
// and anything but a route conflict stops the start.
func (a *Agent) firstReconcile(rt *siteRuntime) error {
	start := time.Now()
	p, release := a.plan(rt)
	defer release()
	// A slot's device that cannot be opened is retried at the next
	// reconcile, like a route: slot 0 and the other slots work meanwhile.
	openErr := a.openSlotDevices(rt, p.d.Net.ExtraLinks)
	netErr := a.applyNet(rt, p)
	if netErr != nil && !onlyConflicts(netErr) {
		return fmt.Errorf("configure interface %s: %w", rt.cfg.Interface, netErr)
	}
	if err := rt.dev.Up(); err != nil {
		return fmt.Errorf("bring up WireGuard device %s: %w", rt.cfg.Interface, err)
	}
	if err := a.applyWG(rt, p); err != nil {
		return err
	}
	slotErr := errors.Join(openErr, a.applySlots(rt, p))
	a.logReconcileError(slotErr)
	a.applied(rt, p, netErr == nil && slotErr == nil, start)
	return netErr
}

// reconcilePlan is a computed desired state, with the sites it came from
// and the device as read before computing it.
type reconcilePlan struct {
	sites  []records.Site
	d      desiredState
	dev    *wgtypes.Device // slot 0's; nil if the read failed (devErr)
	devErr error
	// slotDevs are the open slots 1.. as read (nil where a read failed);
	// all is every slot's peers in one view (nil with dev).
	slotDevs []*wgtypes.Device
	all      *wgtypes.Device
}

// plan computes the desired state from the live sites, with the rotation's
// part (rotator.prepare). release must be called once it is applied.
func (a *Agent) plan(rt *siteRuntime) (reconcilePlan, func()) {
	sites, cutover, release := rt.rot.Prepare(a.liveSites(rt), rt.store != nil)
	p := reconcilePlan{}
	// Read once: the uplinks, staggering, the peer diff and the receive
	// marks all need it.
	if p.dev, p.devErr = rt.wgc.Device(rt.cfg.Interface); p.devErr != nil {
		p.devErr = fmt.Errorf("read WireGuard device %s: %w", rt.cfg.Interface, p.devErr)
	}
	p.slotDevs = rt.readSlotDevices()
	p.all = mergedDevice(p.dev, p.slotDevs)
	p.sites = a.useUplinks(rt, sites, p.all)
	in := gatewayInputs{Local: rt.localGateway(), Healthy: rt.gatewayHealth(p.sites, p.all)}
	p.d = computeDesiredGateways(rt.cfg, rt.rot.Key(), rt.mtu, p.sites, cutover, in)
	p.d.Net = drainedNet(p.d.Net, rt.drain)
	a.staggerFirstHandshakes(rt, &p.d, p.all)
	for _, why := range p.d.Dropped {
		a.log.Warn("gossip site left out", "what", why)
	}
	return p, release
}

func (a *Agent) applyNet(rt *siteRuntime, p reconcilePlan) error {
	nch, err := rt.net.Apply(p.d.Net) // after openSlotDevices: the slots' links exist
	a.countRouteRepairs(rt, p.d.Net.Table, nch)
	if !nch.Empty() {
		a.log.Info("kernel state changed", "changes", nch.String())
	}
	return err
}

func (a *Agent) applyWG(rt *siteRuntime, p reconcilePlan) error {
	if p.devErr != nil {
		return p.devErr
	}
	wch, err := wg.ApplyTo(rt.wgc, p.dev, p.d.WG)
	if !wch.Empty() {
		a.log.Info("WireGuard peers changed", "added", peerNames(rt, p.sites, wch.Added), "updated", peerNames(rt, p.sites, wch.Updated),
			"removed", shortKeys(wch.Removed), "private_key_changed", wch.PrivateKey, "listen_port_changed", wch.ListenPort)
	}
	return err
}

// applySlots brings up the slot devices opened for p and configures them.
func (a *Agent) applySlots(rt *siteRuntime, p reconcilePlan) error {
	if len(rt.slots) == 0 {
		return nil
	}
	upErr := rt.upSlotDevices()
	return errors.Join(upErr, a.applySlotsWG(rt, p.d, p.slotDevs))
}

// applied tells the rest of the agent what a reconcile applied (complete:
// everything): status, the probes, the rotation, the gossip roster.
func (a *Agent) applied(rt *siteRuntime, p reconcilePlan, complete bool, start time.Time) {
	rt.lastWG, rt.lastSites, rt.lastInGroup = allPeers(p.d), p.sites, p.d.InGroup
	rt.probeDriven = probeDriven(p.sites)
	rt.shadow.net = p.d.Net
	if p.all != nil {
		rt.setProbeTargets(p.sites, p.all)
	}
	rt.rot.SetSlots(rt.slotLinks(), p.d.slotConfigs())
	rt.rot.Applied(p.sites, p.d.WG, complete, rt.store != nil)
	if rt.gossip != nil {
		rt.gossip.SetRoster(rt.store.Roster(a.policy(rt)))
	}
	took := time.Since(start)
	a.log.Debug("reconciled", "took", took)
	if a.metrics != nil {
		a.metrics.reconcile.Observe(took.Seconds())
	}
}

// staggerFirstHandshakes applies firstHandshakeDelay to d and schedules the
// reconcile that sets the held-back keepalives.
func (a *Agent) staggerFirstHandshakes(rt *siteRuntime, d *desiredState, dev *wgtypes.Device) {
	now := time.Now()
	if rt.firstWanted == nil {
		// The first reconcile. Peers already on the device kept their
		// sessions (an adopted kernel link). The gossip sites all come from
		// the records kept from the last run: each still holds a session
		// with us that a new embedded device no longer has, so it will not
		// initiate, and holding ours back would lose its traffic to us for
		// firstHandshakeDelay. Static peers keep the stagger (a new cluster
		// starting together).
		rt.firstWanted = map[wg.PublicKey]time.Time{}
		if dev != nil {
			for _, p := range dev.Peers {
				rt.firstWanted[wg.PublicKey(p.PublicKey)] = time.Time{}
			}
		}
		for _, p := range slotPeers(d) {
			if !slices.ContainsFunc(rt.cfg.Peers, func(s config.StaticPeer) bool { return s.PublicKey == p.PublicKey }) {
				rt.firstWanted[p.PublicKey] = time.Time{}
			}
		}
	}
	self := rt.rot.Key().Public()
	wanted := map[wg.PublicKey]bool{}
	// A peer with a session has had its first handshake: holding its
	// keepalive back would only toggle it (a rotated key, cut over at its
	// handshake, is such a peer).
	session := map[wg.PublicKey]bool{}
	if dev != nil {
		for _, p := range dev.Peers {
			session[wg.PublicKey(p.PublicKey)] = !p.LastHandshakeTime.IsZero()
		}
	}
	held := false
	for _, p := range slotPeers(d) {
		wanted[p.PublicKey] = true
		t, ok := rt.firstWanted[p.PublicKey]
		if !ok {
			t = now
			rt.firstWanted[p.PublicKey] = now
		}
		if p.PersistentKeepalive > 0 && !session[p.PublicKey] && bytes.Compare(self[:], p.PublicKey[:]) > 0 && now.Sub(t) < firstHandshakeDelay {
			p.PersistentKeepalive = 0
			held = true
		}
	}
	for k := range rt.firstWanted {
		if !wanted[k] {
			delete(rt.firstWanted, k)
		}
	}
	if held {
		time.AfterFunc(firstHandshakeDelay, func() { notify(a.kick) })
	}
}

func (a *Agent) logReconcileError(err error) {
	if err != nil {
		a.log.Error("reconcile incomplete; retrying at the next check", "err", err)
		if a.metrics != nil {
			a.metrics.reconcileErrors.Inc()
		}
	}
}

// onlyConflicts reports whether every error joined in err is a route
// conflict: the agent still starts then, because the other prefixes work.
func onlyConflicts(err error) bool {
	var joined interface{ Unwrap() []error }
	if errors.As(err, &joined) {
		for _, e := range joined.Unwrap() {
			if !errors.Is(e, netconfig.ErrRouteConflict) {
				return false
			}
		}
		return true
	}
	return errors.Is(err, netconfig.ErrRouteConflict)
}

// peerNames names peers by site where known, else by short key.
func peerNames(rt *siteRuntime, sites []records.Site, keys []wg.PublicKey) []string {
	var out []string
	for _, k := range keys {
		name := k.Short()
		for _, p := range rt.cfg.Peers {
			if p.PublicKey == k {
				name = p.Name
			}
		}
		for _, s := range sites {
			if s.PublicKey == k {
				name = s.Name
			}
		}
		out = append(out, name)
	}
	return out
}

func shortKeys(keys []wg.PublicKey) []string {
	var out []string
	for _, k := range keys {
		out = append(out, k.Short())
	}
	return out
}
