package mesh

import (
	"net/netip"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/records"
	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/dcmesh/dcmesh/wg"
)

// desiredState is everything the agent wants the device and the kernel to
// hold. It is a pure function of its inputs, tested without root.
type desiredState struct {
	WG  wg.Config
	Net netconfig.Config
	// Dropped lists gossip sites or prefixes left out because a static peer
	// claims the same name, key or addresses (static configuration wins).
	Dropped []string
}

// computeDesired computes the WireGuard peers and routes for cfg's static
// peers plus the remote sites learned by gossip (already validated and
// resolved), with key as this site's private key and mtu as the link MTU.
//
// A site that announces a next key gets it as a second peer with its
// endpoint and no allowed IPs (a handshake completes, nothing is routed to
// it, and we do not initiate: the site cannot answer on it yet), until
// cutover says a handshake on it was seen: then the next key alone takes the
// site's prefixes.
func computeDesired(cfg *config.Config, key wg.PrivateKey, mtu int, sites []records.Site, cutover map[wg.PublicKey]bool) desiredState {
	var d desiredState
	d.WG = wg.Config{PrivateKey: key, ListenPort: cfg.ListenPort}
	var remote []netip.Prefix
	names := map[string]bool{}
	keys := map[wg.PublicKey]bool{}
	for _, p := range cfg.Peers {
		d.WG.Peers = append(d.WG.Peers, wg.Peer{
			PublicKey:           p.PublicKey,
			Endpoint:            p.Endpoint,
			AllowedIPs:          p.AllowedPrefixes,
			PersistentKeepalive: p.PersistentKeepalive,
		})
		remote = append(remote, p.AllowedPrefixes...)
		names[p.Name] = true
		keys[p.PublicKey] = true
	}
	static := len(remote)
	self := key.Public() // a scalar multiplication: once, not per site
	for _, s := range sites {
		if names[s.Name] || keys[s.PublicKey] || s.PublicKey == self || (!s.Next.IsZero() && (keys[s.Next] || s.Next == self)) {
			d.Dropped = append(d.Dropped, s.Name+": name or WireGuard key of a static peer")
			continue
		}
		var allowed []netip.Prefix
		for _, p := range s.Prefixes {
			if config.OverlapsAny(p, remote[:static]) {
				d.Dropped = append(d.Dropped, s.Name+" "+p.String()+": overlaps a static peer")
				continue
			}
			allowed = append(allowed, p)
		}
		current := s.PublicKey
		if !s.Next.IsZero() {
			if cutover[s.Next] {
				current = s.Next
			} else {
				d.WG.Peers = append(d.WG.Peers, wg.Peer{PublicKey: s.Next, Endpoint: s.Endpoint, PresharedKey: s.NextPSK})
			}
		}
		psk := s.PSK
		if current == s.Next {
			psk = s.NextPSK
		}
		keys[s.PublicKey] = true
		if !s.Next.IsZero() {
			keys[s.Next] = true
		}
		d.WG.Peers = append(d.WG.Peers, wg.Peer{
			PublicKey:           current,
			Endpoint:            s.Endpoint,
			AllowedIPs:          allowed,
			PersistentKeepalive: cfg.PersistentKeepalive,
			PresharedKey:        psk,
		})
		remote = append(remote, allowed...)
	}
	d.Net = netconfig.Config{
		Link:       cfg.Interface,
		MTU:        mtu,
		Addresses:  []netip.Prefix{cfg.OverlayAddress},
		Table:      cfg.RouteTable,
		Metric:     cfg.RouteMetric,
		Routes:     remote,
		FailClosed: remote,
	}
	return d
}
