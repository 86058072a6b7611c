package netconfig_test

import (
	"strings"
	"testing"

	"github.com/dcmesh/dcmesh/netconfig"
)

// A drained gateway moves its tunnel routes to Metric-1 and keeps the
// fail-closed routes where they were (FailClosedMetric): at every step of
// the move and back each prefix has a tunnel route, the unreachable route
// is never touched, and it stays worse than the tunnel.
func TestApplyDrainMetricKeepsARouteAndTheFailClosedRoute(t *testing.T) {
	f := newFake()
	m := netconfig.New(f, nil)
	normal := site("10.2.0.0/16", "fd00:2::/48")
	if _, err := m.Apply(normal); err != nil {
		t.Fatal(err)
	}
	drained := normal
	drained.Metric, drained.FailClosedMetric = 99, 101
	steps := 0
	f.OnChange = func(state string) {
		steps++
		for _, dst := range []string{"10.2.0.0/16", "fd00:2::/48"} {
			if !strings.Contains(state, "route "+dst+" dev dcm0 proto 220 metric 99") && !strings.Contains(state, "route "+dst+" dev dcm0 proto 220 metric 100") {
				t.Errorf("a step left %s without a tunnel route:\n%s", dst, state)
			}
			if !strings.Contains(state, "route unreachable "+dst+" proto 220 metric 101") {
				t.Errorf("a step left %s without its fail-closed route at 101:\n%s", dst, state)
			}
		}
	}
	for _, cfg := range []netconfig.Config{drained, normal} {
		f.Ops = nil
		if _, err := m.Apply(cfg); err != nil {
			t.Fatal(err)
		}
		for _, op := range f.Ops {
			if strings.Contains(op, "unreachable") {
				t.Errorf("the fail-closed route was touched: %s", op)
			}
		}
		want := "metric 99"
		if cfg.FailClosedMetric == 0 {
			want = "metric 100"
		}
		if got := f.String(); strings.Count(got, "dev dcm0 proto 220 "+want) != 2 || strings.Count(got, "proto 220 metric 101") != 2 {
			t.Errorf("after Apply (metric %d): kernel state\n%s", cfg.Metric, got)
		}
	}
	if steps < 4 {
		t.Errorf("%d mutating steps for two moves of two prefixes, want at least 4 (an add and a delete each)", steps)
	}
	bad := normal
	bad.FailClosedMetric = 100
	if _, err := m.Apply(bad); err == nil || !strings.Contains(err.Error(), "FailClosedMetric") {
		t.Errorf("FailClosedMetric not worse than Metric: err = %v", err)
	}
}
