package config

import (
	"fmt"
	"net/netip"

	"github.com/dcmesh/dcmesh/mesh/trust"
)

// MaxEndpoints is how many uplinks a site may announce: what a signed
// record carries (trust.MaxEndpoints).
const MaxEndpoints = trust.MaxEndpoints

// parseEndpoints reads `endpoint` (one uplink) or `endpoints` (several, in
// order of preference) into c.Endpoint and c.Endpoints.
func (c *Config) parseEndpoints(fc *fileConfig, bad *problems) {
	if fc.Endpoint != "" && len(fc.Endpoints) > 0 {
		bad.add("endpoints", "is set together with endpoint: use endpoints alone (several uplinks, the preferred first) or endpoint alone (one)")
		return
	}
	if fc.Endpoint != "" {
		if ap, ok := parseEndpoint(fc.Endpoint); ok {
			c.Endpoint, c.Endpoints = ap, []netip.AddrPort{ap}
		} else {
			bad.add("endpoint", "%q is not IP:PORT: the underlay address other sites send WireGuard traffic to, e.g. 192.0.2.10:51820", fc.Endpoint)
		}
		return
	}
	if fc.Endpoints != nil && len(fc.Endpoints) == 0 {
		bad.add("endpoints", "is empty: list this site's underlay IP:PORT per uplink, the preferred first, e.g. endpoints: [192.0.2.10:51820, 198.51.100.10:51820]")
		return
	}
	if len(fc.Endpoints) > MaxEndpoints {
		bad.add("endpoints", "lists %d endpoints: a site announces at most %d", len(fc.Endpoints), MaxEndpoints)
		return
	}
	var eps []netip.AddrPort
	seen := map[netip.AddrPort]int{}
	ok := true
	for i, e := range fc.Endpoints {
		f := fmt.Sprintf("endpoints[%d]", i)
		ap, good := parseEndpoint(e)
		j, dup := seen[ap]
		switch {
		case !good:
			bad.add(f, "%q is not IP:PORT: an underlay address other sites send WireGuard traffic to, e.g. 192.0.2.10:51820", e)
			ok = false
		case dup:
			bad.add(f, "%s is also endpoints[%d]: list each uplink once", ap, j)
			ok = false
		default:
			seen[ap] = i
			eps = append(eps, ap)
		}
	}
	if ok && len(eps) > 0 {
		c.Endpoint, c.Endpoints = eps[0], eps
	}
}

// parseEndpoint parses an underlay IP:PORT: an address other sites can send
// to (not unspecified) and a port.
func parseEndpoint(s string) (netip.AddrPort, bool) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 || ap.Addr().IsUnspecified() {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// UplinkEndpoints returns the endpoints this site announces, the preferred
// first: Endpoints, or Endpoint alone for a Config built without it.
func (c *Config) UplinkEndpoints() []netip.AddrPort {
	if len(c.Endpoints) > 0 {
		return c.Endpoints
	}
	if c.Endpoint.IsValid() {
		return []netip.AddrPort{c.Endpoint}
	}
	return nil
}
