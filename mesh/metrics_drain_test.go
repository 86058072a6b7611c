package mesh

import (
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// dcmesh_drained follows the status's drain state, and the peers' drain
// state is one series per peer; the registry still passes the linter.
func TestDrainMetrics(t *testing.T) {
	since := time.Unix(1700000000, 0)
	for _, tc := range []struct {
		drained bool
		want    string
	}{
		{false, "dcmesh_drained 0\n"},
		{true, "dcmesh_drained 1\n"},
	} {
		m := newMetrics(BuildInfo{})
		st := &control.Status{Site: "fra1", Peers: []control.PeerStatus{
			{Site: "ams1", PublicKey: "A", Role: control.RoleCurrent, Draining: true},
			{Site: "par1", PublicKey: "P", Role: control.RoleCurrent},
		}}
		if tc.drained {
			st.Drain = control.DrainStatus{Drained: true, Since: &since}
		}
		m.snapshot.Store(st)
		want := `
# HELP dcmesh_drained 1 while this gateway is drained for maintenance (dcmesh drain), 0 in service.
# TYPE dcmesh_drained gauge
` + tc.want + `# HELP dcmesh_peer_draining 1 if the peer's record says its gateway is drained for maintenance, 0 if not.
# TYPE dcmesh_peer_draining gauge
dcmesh_peer_draining{public_key="A",role="current",site="ams1"} 1
dcmesh_peer_draining{public_key="P",role="current",site="par1"} 0
`
		if err := testutil.GatherAndCompare(m.reg, strings.NewReader(want), "dcmesh_drained", "dcmesh_peer_draining"); err != nil {
			t.Errorf("drained %v: %v", tc.drained, err)
		}
		problems, err := testutil.GatherAndLint(m.reg)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
}
