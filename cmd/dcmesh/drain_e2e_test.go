package main

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/config"
	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/netconfig/netconfigtest"
)

// Planned maintenance on two one-gateway sites, through the binary:
// draining B tells A within a gossip round, moves B's tunnel routes to
// metric-1 with the fail-closed route kept at +1, and loses no packet of
// A→B (one gateway: nowhere else to go); `drain --wait` exits 1 naming A
// while traffic flows and 0 once it stops; undrain reverses all of it,
// without loss; a restart stays drained.
func TestDrainOneGatewaySites(t *testing.T) {
	m, _ := newGossipMesh(t, 2)
	a, b := m.sites[0], m.sites[1]
	m.startAll()
	m.waitFullMesh(a, b)
	metric := config.DefaultRouteMetric
	b.waitRoutes(t, a, metric)

	// Drain B while A pings B every 20 ms.
	ping := a.startPing(b, 1000)
	drained := time.Now()
	out, errOut, code := runBinary(t, "drain", "--config", b.cfgPath, "--json")
	var j drainJSON
	if err := json.Unmarshal([]byte(out), &j); err != nil || code != 0 || j.Result != control.DrainDraining || !j.Drained || !j.Changed {
		t.Fatalf("drain: exit %d, %+v (%v) %s", code, j, err, errOut)
	}
	a.waitPeerDraining(t, b, true)
	t.Logf("A saw B draining %s after dcmesh drain started", time.Since(drained).Round(time.Millisecond))
	b.waitRoutes(t, a, metric-1)
	if st := b.status(); !st.Drain.Drained || st.Routes.Programmed != st.Routes.Desired || st.Routes.FailClosedProgrammed != st.Routes.FailClosedDesired {
		t.Errorf("B's status while drained: drain %+v, routes %+v", st.Drain, st.Routes)
	}
	if _, err := os.Stat(config.StateDir(b.stateDir).Drain()); err != nil {
		t.Errorf("no drain state on disk: %v", err)
	}
	out, _, code = runBinary(t, "drain", "--wait", "--timeout", "3s", "--settle", "1s", "--config", b.cfgPath)
	if code != 1 || !strings.Contains(out, "still carrying traffic after 3s: "+a.name+" (") {
		t.Errorf("drain --wait with traffic: exit %d, %q; want 1 naming %s", code, out, a.name)
	}
	sent, got := ping.wait(t)
	if got != sent {
		t.Errorf("A→B while draining: %d of %d pings answered, want every one", got, sent)
	}
	t.Logf("A→B while draining: %d of %d pings (20 ms apart) answered", got, sent)
	stopped := time.Now()
	waitFor(t, 20*time.Second, "drain --wait once traffic stopped", func() error {
		out, errOut, code := runBinary(t, "drain", "--wait", "--timeout", "3s", "--settle", "1s", "--config", b.cfgPath, "--json")
		var j drainJSON
		if err := json.Unmarshal([]byte(out), &j); err != nil || code != 0 || j.Result != control.DrainIdle || len(j.Busy) != 0 {
			return fmt.Errorf("exit %d, %s %s", code, out, errOut)
		}
		return nil
	})
	t.Logf("drain --wait --settle 1s returned idle %s after the traffic stopped", time.Since(stopped).Round(time.Millisecond))
	if h, _ := b.health(); h.Status != control.Degraded || !strings.Contains(strings.Join(h.Reasons, "\n"), "drained for maintenance") {
		t.Errorf("B's health while drained: %s %q, want degraded for the drain", h.Status, h.Reasons)
	}

	// A restart stays drained, and A is told again.
	if err := b.agent.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	b.start()
	m.waitFullMesh(a, b)
	if st := b.status(); !st.Drain.Drained {
		t.Errorf("after a restart B is back in service: %+v", st.Drain)
	}
	b.waitRoutes(t, a, metric-1)
	a.waitPeerDraining(t, b, true)

	// Undrain while A pings B: all back, nothing lost.
	ping = a.startPing(b, 250)
	out, errOut, code = runBinary(t, "undrain", "--config", b.cfgPath, "--json")
	if err := json.Unmarshal([]byte(out), &j); err != nil || code != 0 || j.Result != control.DrainUndrained || j.Drained || !j.Changed {
		t.Fatalf("undrain: exit %d, %+v (%v) %s", code, j, err, errOut)
	}
	a.waitPeerDraining(t, b, false)
	b.waitRoutes(t, a, metric)
	if sent, got := ping.wait(t); got != sent {
		t.Errorf("A→B while undraining: %d of %d pings answered, want every one", got, sent)
	} else {
		t.Logf("A→B while undraining: %d of %d pings answered", got, sent)
	}
	if _, err := os.Stat(config.StateDir(b.stateDir).Drain()); !os.IsNotExist(err) {
		t.Errorf("drain state still on disk after undrain: %v", err)
	}
	waitFor(t, 10*time.Second, "B healthy again", func() error {
		if h, _ := b.health(); h.Status != control.Healthy {
			return fmt.Errorf("%s %q", h.Status, h.Reasons)
		}
		return nil
	})
}

// waitRoutes waits until s routes o's prefix into the tunnel at metric,
// with no tunnel route at another metric, and the fail-closed route at
// the configured metric+1 throughout.
func (s *site) waitRoutes(t *testing.T, o *site, metric int) {
	t.Helper()
	tunnel := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(o.prefix()) + ` dev \S+ .*metric (\d+)`)
	unreachable := "unreachable " + o.prefix() + " metric " + strconv.Itoa(config.DefaultRouteMetric+1)
	waitFor(t, 10*time.Second, fmt.Sprintf("%s's route to %s at metric %d", s.name, o.prefix(), metric), func() error {
		routes := s.ns.Run(t, "ip", "route", "show", "proto", "220")
		got := tunnel.FindAllStringSubmatch(routes, -1)
		if len(got) != 1 || got[0][1] != strconv.Itoa(metric) || !strings.Contains(routes, unreachable) {
			return fmt.Errorf("routes:\n%s", routes)
		}
		return nil
	})
}

// waitPeerDraining waits until s's status says o is (or is not) draining.
func (s *site) waitPeerDraining(t *testing.T, o *site, want bool) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("%s sees %s draining=%v", s.name, o.name, want), func() error {
		for _, p := range s.status().Peers {
			if p.Site == o.name && p.Role == control.RoleCurrent {
				if p.Draining != want {
					return fmt.Errorf("draining %v", p.Draining)
				}
				return nil
			}
		}
		return fmt.Errorf("no peer %s", o.name)
	})
}

// pingStream is a ping of a known count running in the background.
type pingStream struct {
	proc  *netconfigtest.Proc
	count int
}

// startPing pings o's host from s's every 20 ms, count times.
func (s *site) startPing(o *site, count int) *pingStream {
	p := s.ns.Start(s.m.t, "ping "+s.name+"→"+o.name, "ping", "-n", "-q", "-c", strconv.Itoa(count), "-i", "0.02", "-W", "5", "-I", s.host(), o.host())
	return &pingStream{proc: p, count: count}
}

var pingCounts = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// wait waits for the ping to end and returns what it sent and got back.
func (p *pingStream) wait(t *testing.T) (sent, got int) {
	t.Helper()
	deadline := time.Duration(p.count)*20*time.Millisecond + 30*time.Second
	netconfigtest.Eventually(t, deadline, 100*time.Millisecond, "ping ends", func() error {
		if !p.proc.Exited() {
			return fmt.Errorf("still running")
		}
		return nil
	})
	mm := pingCounts.FindStringSubmatch(p.proc.Output())
	if mm == nil {
		t.Fatalf("ping printed no summary:\n%s", p.proc.Output())
	}
	sent, _ = strconv.Atoi(mm[1])
	got, _ = strconv.Atoi(mm[2])
	return sent, got
}
