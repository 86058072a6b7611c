package mesh

import (
	"net"
	"net/netip"
	"testing"

	"github.com/dcmesh/dcmesh/netconfig"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestRouteLedgerTellsRepairsFromChanges(t *testing.T) {
	pfx := netip.MustParsePrefix("10.2.0.0/16")
	tunnel := netconfig.Route{Dst: pfx, Kind: netconfig.KindTunnel, Link: 7, Table: 254, Metric: 100}
	failClosed := netconfig.Route{Dst: pfx, Kind: netconfig.KindUnreachable, Table: 254, Metric: 101}
	other := netconfig.Route{Dst: netip.MustParsePrefix("10.3.0.0/16"), Kind: netconfig.KindTunnel, Link: 7, Table: 254, Metric: 100}
	var l routeLedger
	l.seed([]netconfig.Route{tunnel, failClosed}) // adopted from a previous run
	for _, c := range []struct {
		what string
		ch   netconfig.Changes
		want int
	}{
		{"nothing changed", netconfig.Changes{}, 0},
		{"a new site's route", netconfig.Changes{Added: []netconfig.Route{other}}, 0},
		{"the adopted tunnel route deleted by hand, put back", netconfig.Changes{Added: []netconfig.Route{tunnel}}, 1},
		{"both deleted, both put back", netconfig.Changes{Added: []netconfig.Route{tunnel, failClosed}}, 2},
		{"replaced by hand with another link, put back", netconfig.Changes{Replaced: []netconfig.Route{other}}, 1},
		{"the agent moves it to another link", netconfig.Changes{Replaced: []netconfig.Route{{Dst: pfx, Kind: netconfig.KindTunnel, Link: 9, Table: 254, Metric: 100}}}, 0},
		{"and back: its own change again", netconfig.Changes{Replaced: []netconfig.Route{tunnel}}, 0},
		{"the site leaves", netconfig.Changes{Gone: []netconfig.Route{other}}, 0},
		{"it returns: new, not a repair", netconfig.Changes{Added: []netconfig.Route{other}}, 0},
	} {
		if got := l.note(c.ch); len(got) != c.want {
			t.Errorf("%s: %d repairs %v, want %d", c.what, len(got), got, c.want)
		}
	}
}

// The agent counts what it repairs and what it fails to apply, on fakes:
// reconciles that change nothing and a new site's routes are no repairs;
// both routes of a prefix deleted by hand are put back and counted once
// each; a route another program holds in our place is a reconcile error at
// every attempt.
func TestAgentCountsRouteRepairsAndReconcileErrors(t *testing.T) {
	m := newScaleMesh(t, 2)
	m.a.metrics = newMetrics(BuildInfo{})
	repairs := func() (tunnel, failClosed float64) {
		return testutil.ToFloat64(m.a.metrics.routeRepairs.WithLabelValues(routeKindTunnel)),
			testutil.ToFloat64(m.a.metrics.routeRepairs.WithLabelValues(routeKindFailClosed))
	}
	m.reconcile(t)
	m.addSite(t, 2)
	m.reconcile(t)
	if tu, fc := repairs(); tu != 0 || fc != 0 {
		t.Fatalf("repairs before any drift: tunnel %v, fail_closed %v", tu, fc)
	}
	m.nl.DeleteRoutesTo("172.16.0.0/24")
	m.reconcile(t)
	m.reconcile(t)
	if tu, fc := repairs(); tu != 1 || fc != 1 {
		t.Errorf("after deleting both routes of a prefix: tunnel %v, fail_closed %v repairs, want 1 and 1", tu, fc)
	}

	m.nl.DeleteRoutesTo("172.16.1.0/24")
	m.nl.AddForeignRoute(netlink.Route{Dst: &net.IPNet{IP: net.IPv4(172, 16, 1, 0).To4(), Mask: net.CIDRMask(24, 32)},
		Table: 100, Priority: 50, Type: unix.RTN_BLACKHOLE, Protocol: unix.RTPROT_STATIC})
	for range 2 {
		m.a.logReconcileError(m.a.reconcile(m.rt))
	}
	if n := testutil.ToFloat64(m.a.metrics.reconcileErrors); n != 2 {
		t.Errorf("%v reconcile errors counted, want 2 (a foreign route in the way, twice)", n)
	}
	m.a.logReconcileError(nil)
	if n := testutil.ToFloat64(m.a.metrics.reconcileErrors); n != 2 {
		t.Errorf("a clean reconcile counted as an error: %v", n)
	}
}
