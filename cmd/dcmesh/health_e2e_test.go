package main

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestIdleMeshLooksHealthy: three sites with no traffic but their own, their
// health sampled on every site for half a minute, must always say healthy.
// WireGuard alone cannot say so: on an idle pair only one side sends
// keepalives, and the old rule (nothing received for a keepalive period:
// stale) raised false alarms. Then one site really dies: the others go
// degraded naming it within a few seconds and stay degraded (never
// critical: the third site is still up) while it stays dead.
func TestIdleMeshLooksHealthy(t *testing.T) {
	m, _ := newGossipMesh(t, 3)
	for _, s := range m.sites {
		s.appendConfig("persistent_keepalive: 5s\n") // the old false alarm came after 10 s of one-sided quiet
	}
	m.startAll()
	m.waitFullMesh(m.sites...)
	s1, s2, s3 := m.sites[0], m.sites[1], m.sites[2]
	waitFor(t, 20*time.Second, "every peer probed and up", func() error {
		for _, s := range m.sites {
			for _, p := range s.status().Peers {
				if p.Probe == nil || p.Probe.State != "up" {
					return fmt.Errorf("%s: peer %s probe %+v", s.name, p.Site, p.Probe)
				}
			}
		}
		return nil
	})

	const idle = 30 * time.Second
	samples, bad := 0, []string{}
	for end := time.Now().Add(idle); time.Now().Before(end); time.Sleep(time.Second) { // sampling cadence, not a wait for an event
		for _, s := range m.sites {
			samples++
			if h, code := s.health(); code != 0 {
				bad = append(bad, fmt.Sprintf("%s: exit %d %q", s.name, code, h.Reasons))
			}
		}
	}
	t.Logf("idle: %d health samples over %s, %d not healthy", samples, idle, len(bad))
	if len(bad) > 0 {
		t.Errorf("an idle healthy mesh reported trouble %d times in %d samples:\n%s", len(bad), samples, strings.Join(bad, "\n"))
	}

	s3.agent.Kill()
	killed := time.Now()
	for _, s := range []*site{s1, s2} {
		waitFor(t, 10*time.Second, s.name+" degraded naming site3", func() error {
			h, code := s.health()
			if code != 1 || !strings.Contains(strings.Join(h.Reasons, "\n"), s3.name) {
				return fmt.Errorf("exit %d %q", code, h.Reasons)
			}
			return nil
		})
	}
	t.Logf("degraded %s after site3 was killed", time.Since(killed).Round(100*time.Millisecond))
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(time.Second) {
		for _, s := range []*site{s1, s2} {
			if h, code := s.health(); code != 1 {
				t.Errorf("%s with one peer dead and one up: exit %d %q, want 1 (degraded)", s.name, code, h.Reasons)
			}
		}
	}
}
