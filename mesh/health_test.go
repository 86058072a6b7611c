package mesh

import (
	"testing"
	"time"

	"github.com/dcmesh/dcmesh/mesh/control"
	"github.com/dcmesh/dcmesh/mesh/probe"
)

func TestPeerState(t *testing.T) {
	now := time.Unix(1e9, 0)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	up := &probe.PeerState{State: probe.StateUp}
	wentDown := &probe.PeerState{State: probe.StateDown, Downs: 1}
	starting := &probe.PeerState{State: probe.StateInit}
	k := 25 * time.Second
	for _, c := range []struct {
		name      string
		hs        time.Time
		keepalive time.Duration
		pr        *probe.PeerState
		since     time.Time
		want      control.PeerState
	}{
		{"probes answered, handshake 170 s old", ago(170 * time.Second), k, up, ago(time.Hour), control.PeerUp},
		{"probes answered on an idle pair whose handshake is 3.5 min old", ago(210 * time.Second), k, up, ago(time.Hour), control.PeerUp},
		{"probes lost, session still valid", ago(10 * time.Second), k, wentDown, ago(time.Hour), control.PeerStale},
		{"probes lost, no valid session", ago(200 * time.Second), k, wentDown, ago(time.Hour), control.PeerDown},
		{"new session coming up, fresh handshake", ago(time.Second), k, starting, ago(2 * time.Second), control.PeerUp},
		{"session never came up within the grace", ago(time.Second), k, starting, ago(probeGrace + time.Second), control.PeerStale},
		{"no probes, idle pair with keepalive, 3.5 min", ago(210 * time.Second), k, nil, time.Time{}, control.PeerUp},
		{"no probes, beyond 180 s + keepalive + rekey timeout", ago(211 * time.Second), k, nil, time.Time{}, control.PeerDown},
		{"no probes, no keepalive, 181 s", ago(181 * time.Second), 0, nil, time.Time{}, control.PeerDown},
		{"no probes, no keepalive, 60 s", ago(60 * time.Second), 0, nil, time.Time{}, control.PeerUp},
		{"no handshake yet", time.Time{}, k, nil, time.Time{}, control.PeerDown},
		{"no handshake yet, probes never up", time.Time{}, k, starting, ago(time.Minute), control.PeerDown},
	} {
		if got := peerState(now, c.hs, c.keepalive, c.pr, c.since); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}
