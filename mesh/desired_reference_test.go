package mesh

import (
	"net/netip"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/records"
	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/dcmesh/dcmesh/wg"
)

// computeDesiredOneGatewayReference is computeDesired as it was before
// gateways (main 3297eca), frozen: TestDesiredOneGatewayUnchanged holds the
// multi-gateway computation to it for one-gateway clusters.
func computeDesiredOneGatewayReference(cfg *config.Config, key wg.PrivateKey, mtu int, sites []records.Site, cutover map[wg.PublicKey]bool) desiredState {
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
