package control

import (
	"strings"
	"testing"
	"time"
)

func TestHealthGossipKey(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { s := now.Add(-d); return &s }
	cases := []struct {
		name string
		key  *GossipKeyStatus
		want []string // substrings of the one degraded reason; none: healthy
	}{
		{"no gossip", nil, nil},
		{"stable", &GossipKeyStatus{Phase: "stable", Epoch: 2}, nil},
		{"rotating for a minute", &GossipKeyStatus{Phase: "installed", Epoch: 3, Started: at(time.Minute),
			Pending: map[string]string{"ams1": "does not hold the key yet"}}, nil},
		{"rotating past the bound", &GossipKeyStatus{Phase: "installed", Epoch: 3, Started: at(GossipKeyStuckAfter + time.Second),
			Pending: map[string]string{"par1": "does not hold the key yet", "ams1": "has not said which gossip keys it holds"}},
			[]string{"epoch 3", "phase installed", "15m1s", "ams1: has not said", "; par1: does not hold", "dcmesh gossip-key install"}},
		{"switched past the bound, nobody named", &GossipKeyStatus{Phase: "switched", Epoch: 4, Started: at(time.Hour)},
			[]string{"phase switched", "no site named"}},
		{"stored bundle does not open", &GossipKeyStatus{Phase: "stable", Problem: "the stored bundle does not open: install a newer one"},
			[]string{"gossip key: the stored bundle does not open"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := Status{Site: "fra1", Peers: []PeerStatus{{Site: "ams1", Role: RoleCurrent, State: PeerUp}}}
			st.Gossip.Key = c.key
			h := EvaluateHealth(st, 0, 0, now)
			if c.want == nil {
				if h.Status != Healthy {
					t.Fatalf("health %s %q, want healthy", h.Status, h.Reasons)
				}
				return
			}
			if h.Status != Degraded || len(h.Reasons) != 1 {
				t.Fatalf("health %s %q, want one degraded reason", h.Status, h.Reasons)
			}
			for _, w := range c.want {
				if !strings.Contains(h.Reasons[0], w) {
					t.Errorf("reason %q lacks %q", h.Reasons[0], w)
				}
			}
		})
	}
}
