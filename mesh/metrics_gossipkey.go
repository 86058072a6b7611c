package mesh

import (
	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of the cluster gossip key (gossipkey.go): its epoch and the
// phase of a rotation, one-hot like dcmesh_key_rotation_phase. Key ids are
// not exported: status has them, and a label that changes with every
// rotation would only make new series.
var (
	descGossipKeyEpoch = prometheus.NewDesc("dcmesh_gossip_key_epoch",
		"Epoch of the last gossip-key bundle installed (0: the enrollment's key).", nil, nil)
	descGossipKeyPhase = prometheus.NewDesc("dcmesh_gossip_key_rotation_phase",
		"1 for the phase the gossip-key rotation is in (stable: none under way), 0 for the others.", []string{"phase"}, nil)
)

var gossipKeyPhases = []string{gkStable, gkInstalled, gkSwitched}

func describeGossipKey(ch chan<- *prometheus.Desc) {
	ch <- descGossipKeyEpoch
	ch <- descGossipKeyPhase
}

// collectGossipKey exports st's gossip key (nothing without gossip).
func collectGossipKey(ch chan<- prometheus.Metric, st *control.Status) {
	k := st.Gossip.Key
	if k == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(descGossipKeyEpoch, prometheus.GaugeValue, float64(k.Epoch))
	for _, ph := range gossipKeyPhases {
		ch <- prometheus.MustNewConstMetric(descGossipKeyPhase, prometheus.GaugeValue, oneIf(k.Phase == ph), ph)
	}
}
