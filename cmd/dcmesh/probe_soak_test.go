package main

import (
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestProbeSoak is issue 12's "10 minutes at default timers on the loaded
// 2-core machine: no spurious probe down". Four sites (twelve probe
// sessions) run the in-tunnel probes at their defaults (200 ms × 3, hold
// 2 s) while two busy loops keep both cores loaded; every session must stay
// up for the whole window, with not one down counted, and health must
// never leave healthy. It runs for DCMESH_PROBE_SOAK (e.g. 10m), so it is
// opt-in: the figures are in docs/BENCHMARKS.md with the command.
func TestProbeSoak(t *testing.T) {
	window, err := time.ParseDuration(os.Getenv("DCMESH_PROBE_SOAK"))
	if err != nil || window <= 0 {
		t.Skip("skipping the probe soak: set DCMESH_PROBE_SOAK to its duration (e.g. 10m) to run it")
	}
	m, _ := newGossipMesh(t, 4)
	m.startAll()
	m.waitFullMesh(m.sites...)
	waitFor(t, 30*time.Second, "every peer probed and up", func() error {
		for _, s := range m.sites {
			for _, p := range s.status().Peers {
				if p.Probe == nil || p.Probe.State != "up" {
					return fmt.Errorf("%s: peer %s probe %+v", s.name, p.Site, p.Probe)
				}
			}
		}
		return nil
	})
	startBusyLoops(t, 2)

	type worst struct{ rtt, loss float64 }
	peak := map[string]*worst{}
	samples, unhealthy := 0, []string{}
	// Sampling cadence, not a wait for an event: the soak runs for its window.
	for end := time.Now().Add(window); time.Now().Before(end); time.Sleep(5 * time.Second) {
		for _, s := range m.sites {
			samples++
			if h, code := s.health(); code != 0 {
				unhealthy = append(unhealthy, fmt.Sprintf("%s %s: exit %d %q", time.Now().Format(time.TimeOnly), s.name, code, h.Reasons))
			}
			for _, p := range s.status().Peers {
				if p.Probe == nil {
					continue
				}
				k := s.name + "→" + p.Site
				w := peak[k]
				if w == nil {
					w = &worst{}
					peak[k] = w
				}
				w.rtt, w.loss = max(w.rtt, p.Probe.RTTMillis), max(w.loss, p.Probe.Loss)
			}
		}
	}

	var downs []string
	sessions := 0
	for _, s := range m.sites {
		for _, p := range s.status().Peers {
			sessions++
			switch {
			case p.Probe == nil:
				downs = append(downs, fmt.Sprintf("%s→%s: no probe session", s.name, p.Site))
			case p.Probe.Downs > 0 || p.Probe.State != "up":
				downs = append(downs, fmt.Sprintf("%s→%s: %s, %d downs", s.name, p.Site, p.Probe.State, p.Probe.Downs))
			}
		}
	}
	var lines []string
	for k, w := range peak {
		lines = append(lines, fmt.Sprintf("%s rtt max %.2f ms, loss max %.1f%%", k, w.rtt, 100*w.loss))
	}
	sort.Strings(lines)
	t.Logf("soak %s, both cores loaded: %d sessions, %d health samples, %d not healthy; peaks:\n%s",
		window, sessions, samples, len(unhealthy), strings.Join(lines, "\n"))
	if len(downs) > 0 {
		t.Errorf("probe sessions went down without a fault:\n%s", strings.Join(downs, "\n"))
	}
	if len(unhealthy) > 0 {
		t.Errorf("health left healthy %d times in %d samples:\n%s", len(unhealthy), samples, strings.Join(unhealthy, "\n"))
	}
}

// startBusyLoops starts n shell busy loops (load for the CPU), killed at
// cleanup by their exact process.
func startBusyLoops(t *testing.T, n int) {
	t.Helper()
	for range n {
		cmd := exec.Command("sh", "-c", "while :; do :; done")
		if err := cmd.Start(); err != nil {
			t.Fatalf("start a busy loop: %v", err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
	}
}
