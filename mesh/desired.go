package mesh

import (
	"net/netip"

	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/dcmesh/dcmesh/wg"
)

// desiredState is everything the agent wants the device and the kernel to
// hold. It is a pure function of its inputs, tested without root.
type desiredState struct {
	WG  wg.Config
	Net netconfig.Config
}

// computeDesired computes the WireGuard peers and routes for cfg, with key as
// this site's private key and mtu as the link MTU (already resolved from the
// underlay when the config says auto).
func computeDesired(cfg *Config, key wg.PrivateKey, mtu int) desiredState {
	var d desiredState
	d.WG = wg.Config{PrivateKey: key, ListenPort: cfg.ListenPort}
	var remote []netip.Prefix
	for _, p := range cfg.Peers {
		d.WG.Peers = append(d.WG.Peers, wg.Peer{
			PublicKey:           p.PublicKey,
			Endpoint:            p.Endpoint,
			AllowedIPs:          p.AllowedPrefixes,
			PersistentKeepalive: p.PersistentKeepalive,
		})
		remote = append(remote, p.AllowedPrefixes...)
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

// endpoints lists the peers' underlay addresses, to find the underlay MTU.
func (c *Config) endpoints() []netip.Addr {
	var out []netip.Addr
	for _, p := range c.Peers {
		if p.Endpoint.IsValid() {
			out = append(out, p.Endpoint.Addr())
		}
	}
	return out
}
