package mesh

import (
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A status as the agent builds it becomes the documented series: peer_up
// without a state label, one-hot state and rotation phase families with
// every value present, times as Unix timestamps (0 for a handshake that
// never happened), and the whole registry passes Prometheus' linter.
func TestMetricsFollowPrometheusConventions(t *testing.T) {
	hs := time.Unix(1700000000, 500_000_000)
	next := time.Unix(1700086400, 0)
	m := newMetrics(BuildInfo{Version: "v1.2.3", GoVersion: "go1.26.0", Revision: "abc123"})
	m.snapshot.Store(&control.Status{
		GeneratedAt: time.Unix(1700000100, 0), Site: "fra1", Interface: "dcm0", Backend: "userspace", PublicKey: "SELF",
		Key: control.KeyStatus{Epoch: 3, Since: time.Unix(1699990000, 0), NextRotation: &next, RotationPhase: "switching"},
		Peers: []control.PeerStatus{
			{Site: "ams1", PublicKey: "A", Role: control.RoleCurrent, State: control.PeerStale, LastHandshake: &hs, RoutesProgrammed: true,
				Probe: &control.ProbeStatus{State: control.ProbeDown, RTTMillis: 12.5, Loss: 0.25}},
			{Site: "par1", PublicKey: "P", Role: control.RoleCurrent, State: control.PeerDown},
		},
	})
	m.reconcileErrors.Inc()
	m.routeRepairs.WithLabelValues(routeKindFailClosed).Inc()
	want := `
# HELP dcmesh_peer_up 1 if the peer's state is up, 0 if stale or down (dcmesh_peer_state says which; docs/STATUS.md).
# TYPE dcmesh_peer_up gauge
dcmesh_peer_up{public_key="A",role="current",site="ams1"} 0
dcmesh_peer_up{public_key="P",role="current",site="par1"} 0
# HELP dcmesh_peer_state 1 for the peer's state (up, stale, down), 0 for the others.
# TYPE dcmesh_peer_state gauge
dcmesh_peer_state{public_key="A",role="current",site="ams1",state="down"} 0
dcmesh_peer_state{public_key="A",role="current",site="ams1",state="stale"} 1
dcmesh_peer_state{public_key="A",role="current",site="ams1",state="up"} 0
dcmesh_peer_state{public_key="P",role="current",site="par1",state="down"} 1
dcmesh_peer_state{public_key="P",role="current",site="par1",state="stale"} 0
dcmesh_peer_state{public_key="P",role="current",site="par1",state="up"} 0
# HELP dcmesh_peer_last_handshake_timestamp_seconds When the last WireGuard handshake with the peer completed (0: never, as wg show latest-handshakes says).
# TYPE dcmesh_peer_last_handshake_timestamp_seconds gauge
dcmesh_peer_last_handshake_timestamp_seconds{public_key="A",role="current",site="ams1"} 1.7000000005e+09
dcmesh_peer_last_handshake_timestamp_seconds{public_key="P",role="current",site="par1"} 0
# HELP dcmesh_peer_probe_rtt_seconds Smoothed round-trip time of the in-tunnel probes (absent for unprobed peers).
# TYPE dcmesh_peer_probe_rtt_seconds gauge
dcmesh_peer_probe_rtt_seconds{public_key="A",role="current",site="ams1"} 0.0125
# HELP dcmesh_key_current_since_timestamp_seconds When this site's current WireGuard key became current.
# TYPE dcmesh_key_current_since_timestamp_seconds gauge
dcmesh_key_current_since_timestamp_seconds 1.69999e+09
# HELP dcmesh_key_rotation_phase 1 for this site's key rotation phase (stable, prepared, switching, switched), 0 for the others.
# TYPE dcmesh_key_rotation_phase gauge
dcmesh_key_rotation_phase{phase="prepared"} 0
dcmesh_key_rotation_phase{phase="stable"} 0
dcmesh_key_rotation_phase{phase="switched"} 0
dcmesh_key_rotation_phase{phase="switching"} 1
# HELP dcmesh_build_info Always 1; labels name the agent's build.
# TYPE dcmesh_build_info gauge
dcmesh_build_info{goversion="go1.26.0",revision="abc123",version="v1.2.3"} 1
# HELP dcmesh_reconcile_errors_total Reconciles that left something unapplied (a route conflict, a netlink or WireGuard error, each logged); retried at the next check.
# TYPE dcmesh_reconcile_errors_total counter
dcmesh_reconcile_errors_total 1
# HELP dcmesh_route_repairs_total Routes of ours put back after someone deleted or changed them, by kind (tunnel, fail_closed).
# TYPE dcmesh_route_repairs_total counter
dcmesh_route_repairs_total{kind="fail_closed"} 1
dcmesh_route_repairs_total{kind="tunnel"} 0
`
	names := []string{"dcmesh_peer_up", "dcmesh_peer_state", "dcmesh_peer_last_handshake_timestamp_seconds", "dcmesh_peer_probe_rtt_seconds",
		"dcmesh_key_current_since_timestamp_seconds", "dcmesh_key_rotation_phase", "dcmesh_build_info", "dcmesh_reconcile_errors_total",
		"dcmesh_route_repairs_total"}
	if err := testutil.GatherAndCompare(m.reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	problems, err := testutil.GatherAndLint(m.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	// The Go and process collectors are on.
	for _, n := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if c, err := testutil.GatherAndCount(m.reg, n); err != nil || c != 1 {
			t.Errorf("%s: %d series, %v", n, c, err)
		}
	}
}

func TestReadBuildInfoDefaults(t *testing.T) {
	bi := readBuildInfo("")
	if bi.Version != "dev" || !strings.HasPrefix(bi.GoVersion, "go") || bi.Revision == "" {
		t.Errorf("readBuildInfo(\"\") = %+v", bi)
	}
	if bi := readBuildInfo("v1.0.0"); bi.Version != "v1.0.0" {
		t.Errorf("version %q", bi.Version)
	}
}

// dcmesh_peer_in_group follows status's in_group: 1 or 0 for the gateways of
// a multi-gateway site, absent for a one-gateway site's peer.
func TestMetricsPeerInGroup(t *testing.T) {
	in, out := true, false
	m := newMetrics(BuildInfo{Version: "v1", GoVersion: "go1.26.0"})
	m.snapshot.Store(&control.Status{
		GeneratedAt: time.Unix(1700000100, 0), Site: "fra1", Interface: "dcm0", Backend: "userspace", PublicKey: "SELF",
		Peers: []control.PeerStatus{
			{Site: "ams1", Node: "ams1", PublicKey: "A0", Role: control.RoleCurrent, State: control.PeerUp, InGroup: &in},
			{Site: "ams1", Gateway: 1, Node: "ams1.1", PublicKey: "A1", Role: control.RoleCurrent, State: control.PeerUp, InGroup: &out},
			{Site: "par1", Node: "par1", PublicKey: "P", Role: control.RoleCurrent, State: control.PeerUp},
		},
	})
	want := `
# HELP dcmesh_peer_in_group 1 while the peer, a gateway of a site with several, is a member of its site's nexthop group (absent for one-gateway sites).
# TYPE dcmesh_peer_in_group gauge
dcmesh_peer_in_group{public_key="A0",role="current",site="ams1"} 1
dcmesh_peer_in_group{public_key="A1",role="current",site="ams1.1"} 0
`
	if err := testutil.GatherAndCompare(m.reg, strings.NewReader(want), "dcmesh_peer_in_group"); err != nil {
		t.Error(err)
	}
}
