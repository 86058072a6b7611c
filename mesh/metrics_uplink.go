package mesh

import (
	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of the uplinks and of shadowed routes, from the same status
// snapshot as the others (metrics.go).
var (
	descFailovers = prometheus.NewDesc("dcmesh_peer_endpoint_failovers_total",
		"Switches of the peer's endpoint away from one that stopped answering the in-tunnel probes, since the agent started (absent for static peers).",
		[]string{"site", "public_key", "role"}, nil)
	descUplinkPreferred = prometheus.NewDesc("dcmesh_peer_endpoint_preferred",
		"1 if the peer is reached on its site's preferred endpoint, 0 on a fallback (absent for static peers).",
		[]string{"site", "public_key", "role"}, nil)
	descShadowed = prometheus.NewDesc("dcmesh_peer_shadowed_routes",
		"Routes of others that take traffic for one of the peer's prefixes away from the tunnel, by prefix (absent when none).",
		[]string{"site", "public_key", "prefix"}, nil)
)

func describeUplinks(ch chan<- *prometheus.Desc) {
	ch <- descFailovers
	ch <- descUplinkPreferred
	ch <- descShadowed
}

// collectUplinks emits the uplink and shadowing metrics of st's peers.
func collectUplinks(ch chan<- prometheus.Metric, st *control.Status) {
	for _, p := range st.Peers {
		if u := p.Uplinks; u != nil {
			ch <- prometheus.MustNewConstMetric(descFailovers, prometheus.CounterValue, float64(u.Failovers), p.Name(), p.PublicKey, string(p.Role))
			preferred := 0.0
			if len(u.Endpoints) > 0 && u.InUse == u.Endpoints[0] {
				preferred = 1
			}
			ch <- prometheus.MustNewConstMetric(descUplinkPreferred, prometheus.GaugeValue, preferred, p.Name(), p.PublicKey, string(p.Role))
		}
		count := map[string]int{}
		var order []string
		for _, s := range p.Shadowed {
			if count[s.Prefix] == 0 {
				order = append(order, s.Prefix)
			}
			count[s.Prefix]++
		}
		for _, pfx := range order {
			ch <- prometheus.MustNewConstMetric(descShadowed, prometheus.GaugeValue, float64(count[pfx]), p.Name(), p.PublicKey, pfx)
		}
	}
}
