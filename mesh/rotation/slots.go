package rotation

import (
	"errors"

	"github.com/dcmesh/dcmesh/mesh/records"
	"github.com/dcmesh/dcmesh/wg"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// A gateway holds remote gateways on one WireGuard interface per slot (the
// slot-k gateway of every site on the slot-k interface), all with this
// gateway's one key: the key switch is made on each interface, a peer's
// pre-installed next key is on the interface where that peer lives, and so
// are its keepalives and its cut-over. Without SetSlots there is one
// interface, cfg.Interface.

// slot is one interface with the WireGuard state last applied to it.
type slot struct {
	iface string
	cfg   wg.Config
}

// SetSlots gives the Rotator the interface of every slot, slot 0
// (cfg.Interface) first, with what each was last configured with (the same
// length). The agent calls it after every reconcile, before Applied.
func (r *Rotator) SetSlots(ifaces []string, cfgs []wg.Config) {
	r.slots = r.slots[:0]
	for i, name := range ifaces {
		if i < len(cfgs) {
			r.slots = append(r.slots, slot{iface: name, cfg: cfgs[i]})
		}
	}
}

// slotList is every slot, slot 0 first: r.slots, or cfg.Interface with the
// last applied state.
func (r *Rotator) slotList() []slot {
	if len(r.slots) == 0 {
		return []slot{{iface: r.cfg.Interface, cfg: r.wgcfg}}
	}
	out := make([]slot, len(r.slots))
	copy(out, r.slots)
	out[0].cfg = r.wgcfg // Applied's, the latest
	return out
}

// interfaceOf is the interface where site s (a gateway) is a peer.
func (r *Rotator) interfaceOf(s records.Site) string {
	if int(s.Gateway) < len(r.slots) {
		return r.slots[s.Gateway].iface
	}
	return r.cfg.Interface
}

// switchKeyEverywhere gives every slot's device the key next.
func (r *Rotator) switchKeyEverywhere(next wg.PrivateKey, psks wg.PresharedKeys) error {
	var errs []error
	for _, s := range r.slotList() {
		errs = append(errs, wg.SwitchKey(r.wgc, s.iface, next, psks))
	}
	return errors.Join(errs...)
}

// readDevices reads every slot's device as one view of their peers (keys
// are unique across slots); an error reading slot 0 is the error, another
// slot that cannot be read is left out.
func (r *Rotator) readDevices() (*wgtypes.Device, error) {
	slots := r.slotList()
	dev, err := r.wgc.Device(slots[0].iface)
	if err != nil || len(slots) == 1 {
		return dev, err
	}
	all := *dev
	all.Peers = append([]wgtypes.Peer(nil), dev.Peers...)
	for _, s := range slots[1:] {
		if d, err := r.wgc.Device(s.iface); err == nil {
			all.Peers = append(all.Peers, d.Peers...)
		}
	}
	return &all, nil
}

// allPeers is every slot's last applied peers in one config.
func (r *Rotator) allPeers() wg.Config {
	slots := r.slotList()
	if len(slots) == 1 {
		return slots[0].cfg
	}
	all := slots[0].cfg
	all.Peers = nil
	for _, s := range slots {
		all.Peers = append(all.Peers, s.cfg.Peers...)
	}
	return all
}
