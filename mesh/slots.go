package mesh

import (
	"errors"
	"fmt"
	"time"

	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/mesh/probe"
	"github.com/dcmesh/dcmesh/mesh/records"
	"github.com/dcmesh/dcmesh/wg"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// A gateway holds the slot-k gateway of every remote site on its slot-k
// WireGuard interface (docs/design/gateways.md "Layout on a gateway"):
// slot 0 is siteRuntime.dev, as in a one-gateway cluster; the devices of
// slots 1..K-1 are opened here when a remote gateway first needs them, with
// slot 0's backend, MTU and private key, and stay open until the agent
// stops (a slot no longer needed keeps no peers); `down --purge` deletes
// their links.

// maxSlots bounds the slots: gateway indexes are 0..3 (trust.CheckIssue).
const maxSlots = 4

// slotDevice is the open device of a slot k > 0.
type slotDevice struct {
	dev wg.Device
	up  bool // Up was called, after netconfig set the link up
}

// slotLinks returns the interfaces of every open slot, slot 0 first.
func (rt *siteRuntime) slotLinks() []string {
	out := []string{rt.cfg.Interface}
	for _, s := range rt.slots {
		out = append(out, s.dev.Name())
	}
	return out
}

// openSlotDevices opens the devices of the slots in links (Net.ExtraLinks:
// slots 1..) that are not open yet.
func (a *Agent) openSlotDevices(rt *siteRuntime, links []string) error {
	if len(rt.slots) >= len(links) {
		return nil
	}
	mode, open := wg.ModeUserspace, rt.openSlot
	if rt.dev != nil && rt.dev.Backend() == wg.BackendKernel {
		mode = wg.ModeKernel
	}
	if open == nil {
		open = wg.OpenDevice
	}
	for len(rt.slots) < len(links) {
		k, name := len(rt.slots)+1, links[len(rt.slots)]
		dev, err := open(wg.DeviceOptions{Name: name, Mode: mode, MTU: rt.mtu, Logger: a.log,
			BuffersPerPool: rt.cfg.Userspace.BuffersPerPool, MemoryLimit: rt.cfg.Userspace.MemoryLimit})
		if err != nil {
			return fmt.Errorf("open WireGuard device %s for the remote gateways of slot %d: %w", name, k, err)
		}
		a.log.Info("opened the WireGuard device of a remote gateway slot", "interface", name, "slot", k,
			"backend", string(dev.Backend()), "listen_port", rt.cfg.ListenPort+k)
		rt.slots = append(rt.slots, &slotDevice{dev: dev})
		rt.watchSlotDevice(dev)
	}
	return nil
}

// watchSlotDevice tells the loop (slotStopped) when an embedded slot
// device stops on its own, as it learns of slot 0's from its Done.
func (rt *siteRuntime) watchSlotDevice(dev wg.Device) {
	done := dev.Done()
	if done == nil {
		return // kernel: the link outlives the agent
	}
	if rt.slotStopped == nil {
		rt.slotStopped = make(chan string, maxSlots)
	}
	stopped := rt.slotStopped
	go func() {
		<-done // also at Close, when the loop has ended: nobody reads then
		select {
		case stopped <- dev.Name():
		default:
		}
	}()
}

// upSlotDevices brings up the slot devices that are not yet (after
// netconfig set their links up, before their peers are configured).
func (rt *siteRuntime) upSlotDevices() error {
	var errs []error
	for _, s := range rt.slots {
		if s.up {
			continue
		}
		if err := s.dev.Up(); err != nil {
			errs = append(errs, fmt.Errorf("bring up WireGuard device %s: %w", s.dev.Name(), err))
			continue
		}
		s.up = true
	}
	return errors.Join(errs...)
}

// readSlotDevices reads the devices of slots 1.. (nil where a read fails).
func (rt *siteRuntime) readSlotDevices() []*wgtypes.Device {
	out := make([]*wgtypes.Device, len(rt.slots))
	for i, s := range rt.slots {
		out[i], _ = rt.wgc.Device(s.dev.Name())
	}
	return out
}

// mergedDevice is one view of the peers of every slot (keys are unique
// across slots: each remote gateway has its own), for what looks peers up
// by key; nil if slot 0 could not be read.
func mergedDevice(slot0 *wgtypes.Device, slots []*wgtypes.Device) *wgtypes.Device {
	if slot0 == nil || len(slots) == 0 {
		return slot0
	}
	all := *slot0
	all.Peers = append([]wgtypes.Peer(nil), slot0.Peers...)
	for _, d := range slots {
		if d != nil {
			all.Peers = append(all.Peers, d.Peers...)
		}
	}
	return &all
}

// applySlotsWG configures the devices of slots 1..: as d wants them, and
// with no peers the open slots d no longer needs. devs are the devices as
// read before computing d (nil: read now, e.g. a device just opened).
func (a *Agent) applySlotsWG(rt *siteRuntime, d desiredState, devs []*wgtypes.Device) error {
	var errs []error
	for i, s := range rt.slots {
		want := wg.Config{PrivateKey: rt.rot.Key(), ListenPort: rt.cfg.ListenPort + i + 1}
		if i < len(d.Slots) {
			want = d.Slots[i]
		}
		var cur *wgtypes.Device
		if i < len(devs) {
			cur = devs[i]
		}
		if cur == nil {
			var err error
			if cur, err = rt.wgc.Device(s.dev.Name()); err != nil {
				errs = append(errs, fmt.Errorf("read WireGuard device %s: %w", s.dev.Name(), err))
				continue
			}
		}
		ch, err := wg.ApplyTo(rt.wgc, cur, want)
		if !ch.Empty() {
			a.log.Info("WireGuard peers changed", "interface", s.dev.Name(), "added", shortKeys(ch.Added), "updated", shortKeys(ch.Updated),
				"removed", shortKeys(ch.Removed), "private_key_changed", ch.PrivateKey, "listen_port_changed", ch.ListenPort)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// closeSlotDevices closes the slot devices and, with purge, deletes their
// links.
func (rt *siteRuntime) closeSlotDevices(purge bool) error {
	var errs []error
	for _, s := range rt.slots {
		if err := s.dev.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close WireGuard device %s: %w", s.dev.Name(), err))
		}
		if purge {
			errs = append(errs, wg.DeleteLink(s.dev.Name()))
		}
	}
	return errors.Join(errs...)
}

// purgeSlotLinks deletes the slot links of iface that exist, for `down
// --purge` without a running agent.
func purgeSlotLinks(iface string) error {
	var errs []error
	for k := 1; k < maxSlots; k++ {
		if name, err := slotLink(iface, k); err == nil {
			errs = append(errs, wg.DeleteLink(name))
		}
	}
	return errors.Join(errs...)
}

// localGateway is this gateway's index in its site (its certificate's; 0
// without gossip).
func (rt *siteRuntime) localGateway() uint8 {
	if rt.enr == nil || rt.enr.Cert == nil {
		return 0
	}
	return rt.enr.Cert.Gateway
}

// gatewayHealth says, by node name, which remote gateways may carry
// traffic: those the status calls up. That is the probes' view once a
// probe session runs; before (a gateway just learned, or its session not
// up yet within its grace), a handshake recent enough for a live pair
// (fail-static). dev is every slot's peers as just read.
func (rt *siteRuntime) gatewayHealth(sites []records.Site, dev *wgtypes.Device) map[string]bool {
	out := map[string]bool{}
	if dev == nil {
		return out
	}
	handshake := map[wg.PublicKey]time.Time{}
	for _, p := range dev.Peers {
		handshake[wg.PublicKey(p.PublicKey)] = p.LastHandshakeTime
	}
	probes := rt.probeStates()
	now := time.Now()
	for _, s := range sites {
		last := handshake[s.PublicKey]
		if t := handshake[s.Next]; !s.Next.IsZero() && t.After(last) {
			last = t
		}
		var pr *probe.PeerState
		if ps, ok := probes[s.Node()]; ok {
			pr = &ps
		}
		out[s.Node()] = peerState(now, last, rt.cfg.PersistentKeepalive, pr, rt.probing[s.Node()]) == control.PeerUp
	}
	return out
}

// probeDriven reports whether some remote site has several gateways: then
// a probe change may change a group, and the loop reconciles on it.
func probeDriven(sites []records.Site) bool {
	gateways := map[string]int{}
	for _, s := range sites {
		if gateways[s.Name]++; gateways[s.Name] > 1 {
			return true
		}
	}
	return false
}

// slotPeers points at the peers of every slot of d, slot 0 first.
func slotPeers(d *desiredState) []*wg.Peer {
	var out []*wg.Peer
	for i := range d.WG.Peers {
		out = append(out, &d.WG.Peers[i])
	}
	for k := range d.Slots {
		for i := range d.Slots[k].Peers {
			out = append(out, &d.Slots[k].Peers[i])
		}
	}
	return out
}

// allPeers is slot 0's config with every slot's peers (for status and the
// uplinks, which look peers up by key).
func allPeers(d desiredState) wg.Config {
	if len(d.Slots) == 0 {
		return d.WG
	}
	all := d.WG
	all.Peers = nil
	for _, p := range slotPeers(&d) {
		all.Peers = append(all.Peers, *p)
	}
	return all
}
