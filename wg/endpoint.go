package wg

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// SetEndpoint points peer at ep in one device call that changes nothing
// else, and makes the device send a keepalive there now, so that the far
// side sees the new path at once (WireGuard roams to the source of the
// first authenticated packet; no handshake is needed) and its packets
// follow. keepalive is the peer's interval, which stays as it was. quiet
// peers (a pre-installed next key, which must not be initiated towards)
// get the endpoint without the keepalive. Keys not on the device are left
// out (UpdateOnly).
func SetEndpoint(c Client, name string, peer PublicKey, ep netip.AddrPort, keepalive time.Duration, quiet ...PublicKey) error {
	udp := net.UDPAddrFromAddrPort(ep)
	pcs := keepaliveToggle(wgtypes.PeerConfig{PublicKey: wgtypes.Key(peer), UpdateOnly: true, Endpoint: udp}, keepalive)
	for _, q := range quiet {
		pcs = append(pcs, wgtypes.PeerConfig{PublicKey: wgtypes.Key(q), UpdateOnly: true, Endpoint: udp})
	}
	if err := c.ConfigureDevice(name, wgtypes.Config{Peers: pcs}); err != nil {
		return fmt.Errorf("set the endpoint of peer %s on %s to %s: %w", peer.Short(), name, ep, err)
	}
	return nil
}
