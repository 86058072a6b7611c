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
