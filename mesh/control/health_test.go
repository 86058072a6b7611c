package control

import (
	"strings"
	"testing"
	"time"
)

func TestHealthCriticalWhenStateDirCannotBeWritten(t *testing.T) {
	st := Status{Site: "fra1", Peers: []PeerStatus{{Site: "ams1", State: PeerUp, Role: RoleCurrent}},
		StateDir: StateDirStatus{Path: "/var/lib/dcmesh", Problems: []string{"cannot write /var/lib/dcmesh/seq.json: no space left on device"}}}
	h := EvaluateHealth(st, 0, 0, time.Now())
	if h.ExitCode != 2 || len(h.Reasons) != 1 || !strings.Contains(h.Reasons[0], "seq.json") {
		t.Errorf("health = %d %q, want critical naming seq.json", h.ExitCode, h.Reasons)
	}
	st.StateDir.Problems = nil
	if h := EvaluateHealth(st, 0, 0, time.Now()); h.ExitCode != 0 {
		t.Errorf("without problems: %d %q, want healthy", h.ExitCode, h.Reasons)
	}
}

// TestHealthAllDownConfirmed: when the probes have just taken the last peer
// down (a stalled host takes them all at once), "no peer is up" is degraded
// for AllDownConfirm and critical after; peers that were never probed up
// (no handshake yet, static peers) give critical at once, as before.
func TestHealthAllDownConfirmed(t *testing.T) {
	now := time.Now()
	downSince := func(ago time.Duration) PeerStatus {
		hs := now.Add(-time.Second)
		age := int64(1)
		return PeerStatus{Site: "ams1", Role: RoleCurrent, State: PeerStale, LastHandshake: &hs, HandshakeAgeSeconds: &age,
			Probe: &ProbeStatus{State: ProbeDown, Since: now.Add(-ago), Downs: 1}}
	}
	longDead := downSince(time.Hour)
	longDead.Site = "lon1"
	for _, c := range []struct {
		name  string
		peers []PeerStatus
		code  int
		want  string
	}{
		{"the last peer went down 1 s ago", []PeerStatus{downSince(time.Second), longDead}, 1, "no peer is up (0 of 2) for 1s: critical if it lasts 5s"},
		{"down for longer than the confirmation", []PeerStatus{downSince(6 * time.Second), longDead}, 2, "no peer is up (0 of 2)"},
		{"no handshake ever", []PeerStatus{{Site: "ams1", Role: RoleCurrent, State: PeerDown}}, 2, "no peer is up (0 of 1)"},
	} {
		h := EvaluateHealth(Status{Site: "fra1", Peers: c.peers}, 0, 0, now)
		if h.ExitCode != c.code || !strings.Contains(strings.Join(h.Reasons, "\n"), c.want) {
			t.Errorf("%s: exit %d %q, want %d with %q", c.name, h.ExitCode, h.Reasons, c.code, c.want)
		}
	}
}
