package mesh

import (
	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/records"
	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/dcmesh/dcmesh/wg"
)

// desiredState is everything the agent wants the devices and the kernel to
// hold. It is a pure function of its inputs, tested without root.
type desiredState struct {
	// WG is slot 0's device, cfg.Interface: the static peers and the
	// gateway 0 of every remote site.
	WG wg.Config
	// Slots are the devices of slots 1..K-1 (Slots[k-1] is slot k, on the
	// link Net.ExtraLinks[k-1]); none in a one-gateway cluster.
	Slots []wg.Config
	Net   netconfig.Config
	// Dropped lists gossip sites or prefixes left out because a static peer
	// claims the same name, key or addresses (static configuration wins),
	// or because their slot has no usable interface name.
	Dropped []string
	// InGroup says, for each gateway of a multi-gateway site (by node
	// name), whether a nexthop group of its site has it as a member now;
	// nil in a one-gateway cluster.
	InGroup map[string]bool
}

// slotConfigs returns the WireGuard config of every slot, slot 0 first.
func (d desiredState) slotConfigs() []wg.Config { return append([]wg.Config{d.WG}, d.Slots...) }

// slotLinks returns the interface of every slot, slot 0 first.
func (d desiredState) slotLinks() []string { return append([]string{d.Net.Link}, d.Net.ExtraLinks...) }

// computeDesired is computeDesiredGateways for this gateway being gateway
// 0 and no remote gateway healthy: exactly what a one-gateway cluster
// needs (its sites are never probe-driven).
func computeDesired(cfg *config.Config, key wg.PrivateKey, mtu int, sites []records.Site, cutover map[wg.PublicKey]bool) desiredState {
	return computeDesiredGateways(cfg, key, mtu, sites, cutover, gatewayInputs{})
}

// computeDesiredGateways computes the WireGuard peers and routes for cfg's
// static peers plus the remote gateways learned by gossip (already
// validated and resolved), with key as this gateway's private key and mtu
// as the link MTU; the layout is docs/design/gateways.md "Layout on a
// gateway".
//
// A site that announces a next key gets it as a second peer with its
// endpoint and no allowed IPs (a handshake completes, nothing is routed to
// it, and we do not initiate: the site cannot answer on it yet), until
// cutover says a handshake on it was seen: then the next key alone takes the
// site's prefixes.
func computeDesiredGateways(cfg *config.Config, key wg.PrivateKey, mtu int, sites []records.Site, cutover map[wg.PublicKey]bool, in gatewayInputs) desiredState {
	b := newDesiredBuilder(cfg, key, in)
	b.addStatic()
	accepted := b.accept(sites)
	accepted = b.openSlots(accepted)
	perSite := map[string]int{}
	for _, e := range accepted {
		perSite[e.site.Name]++
	}
	for _, e := range accepted {
		b.addPeers(e, cutover)
		if perSite[e.site.Name] == 1 {
			b.routeOneGateway(e)
		} else {
			b.routeOverlay(e)
		}
	}
	b.routeGroups(accepted, perSite)
	return b.finish(mtu)
}
