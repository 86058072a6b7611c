package mesh

import (
	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of planned maintenance (drain.go), from the status snapshot.
var (
	descDrained = prometheus.NewDesc("dcmesh_drained",
		"1 while this gateway is drained for maintenance (dcmesh drain), 0 in service.", nil, nil)
	descPeerDraining = prometheus.NewDesc("dcmesh_peer_draining",
		"1 if the peer's record says its gateway is drained for maintenance, 0 if not.", []string{"site", "public_key", "role"}, nil)
)

func describeDrain(ch chan<- *prometheus.Desc) {
	ch <- descDrained
	ch <- descPeerDraining
}

func collectDrain(ch chan<- prometheus.Metric, st *control.Status) {
	ch <- prometheus.MustNewConstMetric(descDrained, prometheus.GaugeValue, oneIf(st.Drain.Drained))
	for _, p := range st.Peers {
		ch <- prometheus.MustNewConstMetric(descPeerDraining, prometheus.GaugeValue, oneIf(p.Draining), p.Site, p.PublicKey, string(p.Role))
	}
}
