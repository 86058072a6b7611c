package control

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// gossipKeyHealth is what the gossip key says: degraded while a rotation
// has waited longer than GossipKeyStuckAfter (naming the sites it waits
// for), and while the stored bundle does not open (the site gossips with
// its enrollment's key and cannot talk to sites that dropped that key).
// A rotation under way for less than that is normal and says nothing.
func gossipKeyHealth(k *GossipKeyStatus, now time.Time) []string {
	if k == nil {
		return nil
	}
	var out []string
	if k.Problem != "" {
		out = append(out, "gossip key: "+k.Problem)
	}
	if k.Phase == "stable" || k.Phase == "" || k.Started == nil || now.Sub(*k.Started) < GossipKeyStuckAfter {
		return out
	}
	var waits []string
	for _, site := range slices.Sorted(maps.Keys(k.Pending)) {
		waits = append(waits, site+": "+k.Pending[site])
	}
	what := "no site named"
	if len(waits) > 0 {
		what = strings.Join(waits, "; ")
	}
	return append(out, fmt.Sprintf("gossip-key rotation (epoch %d) in phase %s for %s, waiting for %s (a site that will not come back: revoke it; one that was down: dcmesh gossip-key install --file FILE on it)",
		k.Epoch, k.Phase, now.Sub(*k.Started).Round(time.Second), what))
}
