package config

// DefaultGatewayWeight is an active gateway's share when gateway_weight is
// not set: every gateway of a site equal (active/active).
const DefaultGatewayWeight = 1

// MaxGatewayWeight is the largest gateway_weight: the record carries it in
// one byte.
const MaxGatewayWeight = 255

// parseGatewayWeight reads gateway_weight: this gateway's share of its
// site's traffic among the site's healthy gateways (the peers' nexthop
// group weights), 0 for a standby that carries traffic only while no
// active gateway of the site is healthy.
func (c *Config) parseGatewayWeight(w *int, bad *problems) {
	c.GatewayWeight = DefaultGatewayWeight
	if w == nil {
		return
	}
	if *w < 0 || *w > MaxGatewayWeight {
		bad.add("gateway_weight", "%d is out of range: use 1-%d for an active gateway's share of its site's traffic, or 0 for a standby (default %d)", *w, MaxGatewayWeight, DefaultGatewayWeight)
		return
	}
	c.GatewayWeight = *w
}
