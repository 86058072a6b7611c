package mesh

import (
	"strings"
	"testing"

	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestUplinkMetrics(t *testing.T) {
	st := &control.Status{Peers: []control.PeerStatus{
		{Site: "ams1", PublicKey: "K1", Role: control.RoleCurrent,
			Uplinks:  &control.UplinkStatus{Endpoints: []string{"192.0.2.1:51820", "198.51.100.1:51820"}, InUse: "198.51.100.1:51820", Failovers: 3},
			Shadowed: []control.ShadowedRoute{{Prefix: "10.2.0.0/24"}, {Prefix: "10.2.0.0/24"}, {Prefix: "10.2.1.0/24"}}},
		{Site: "par1", PublicKey: "K2", Role: control.RoleCurrent, Source: control.SourceStatic},
	}}
	ch := make(chan prometheus.Metric, 16)
	collectUplinks(ch, st)
	close(ch)
	got := map[string]float64{}
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		var labels []string
		for _, l := range d.GetLabel() {
			labels = append(labels, l.GetName()+"="+l.GetValue())
		}
		name := m.Desc().String()
		name = name[strings.Index(name, `"`)+1:]
		name = name[:strings.Index(name, `"`)]
		v := d.GetCounter().GetValue() + d.GetGauge().GetValue()
		got[name+"{"+strings.Join(labels, ",")+"}"] = v
	}
	want := map[string]float64{
		"dcmesh_peer_endpoint_failovers_total{public_key=K1,role=current,site=ams1}": 3,
		"dcmesh_peer_endpoint_preferred{public_key=K1,role=current,site=ams1}":       0,
		"dcmesh_peer_shadowed_routes{prefix=10.2.0.0/24,public_key=K1,site=ams1}":    2,
		"dcmesh_peer_shadowed_routes{prefix=10.2.1.0/24,public_key=K1,site=ams1}":    1,
	}
	if len(got) != len(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v; all: %v", k, g, ok, v, got)
		}
	}
}
