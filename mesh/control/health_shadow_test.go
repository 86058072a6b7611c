package control

import (
	"strings"
	"testing"
	"time"
)

func TestHealthCriticalWhenAPrefixIsShadowed(t *testing.T) {
	peer := PeerStatus{Site: "ams1", State: PeerUp, Role: RoleCurrent, AllowedIPs: []string{"10.2.0.0/24"}}
	st := Status{Site: "fra1", Peers: []PeerStatus{peer}}
	if h := EvaluateHealth(st, 0, 0, time.Now()); h.ExitCode != 0 {
		t.Fatalf("without shadows: %d %q", h.ExitCode, h.Reasons)
	}
	st.Peers[0].Shadowed = []ShadowedRoute{{Prefix: "10.2.0.0/24", Route: "10.2.0.0/25 via 192.0.2.9 dev eth1 proto bgp metric 20 table 254", Dst: "10.2.0.0/25", Table: 254, Protocol: "bgp", Dev: []string{"eth1"}}}
	h := EvaluateHealth(st, 0, 0, time.Now())
	if h.Status != Critical || h.ExitCode != 2 || len(h.Reasons) != 1 {
		t.Fatalf("shadowed: %s %d %q, want critical with one reason", h.Status, h.ExitCode, h.Reasons)
	}
	for _, want := range []string{"10.2.0.0/24", "ams1", "10.2.0.0/25 via 192.0.2.9 dev eth1 proto bgp", "filter the remote prefixes"} {
		if !strings.Contains(h.Reasons[0], want) {
			t.Errorf("reason %q does not say %q", h.Reasons[0], want)
		}
	}
}
